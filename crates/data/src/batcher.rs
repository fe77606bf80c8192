//! Next-token batches as Burn tensors.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::window::TokenPair;

/// Inputs and next-token targets, `[batch, seq]` each.
#[derive(Clone, Debug)]
pub struct NextTokenBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
}

/// Builds an int tensor `[rows, cols]` from a flat row-major buffer.
pub fn int_tensor<B: Backend>(
    flat: Vec<i64>,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(flat, [rows, cols]), device)
}

impl<B: Backend> NextTokenBatch<B> {
    /// From flat row-major token buffers of `rows × cols` each.
    pub fn from_flat(
        inputs: &[u32],
        targets: &[u32],
        rows: usize,
        cols: usize,
        device: &B::Device,
    ) -> Self {
        let to_i64 = |v: &[u32]| v.iter().map(|&t| t as i64).collect::<Vec<_>>();
        NextTokenBatch {
            inputs: int_tensor(to_i64(inputs), rows, cols, device),
            targets: int_tensor(to_i64(targets), rows, cols, device),
        }
    }
}

/// Stacks [`TokenPair`]s of equal length into a [`NextTokenBatch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NextTokenBatcher;

impl<B: Backend> Batcher<B, TokenPair, NextTokenBatch<B>> for NextTokenBatcher {
    fn batch(&self, items: Vec<TokenPair>, device: &B::Device) -> NextTokenBatch<B> {
        let cols = items.first().map_or(0, |p| p.input.len());
        let mut inputs = Vec::with_capacity(items.len() * cols);
        let mut targets = Vec::with_capacity(items.len() * cols);
        for p in &items {
            assert_eq!(
                p.input.len(),
                cols,
                "all pairs of a batch must have the same length"
            );
            inputs.extend_from_slice(&p.input);
            targets.extend_from_slice(&p.target);
        }
        NextTokenBatch::from_flat(&inputs, &targets, items.len(), cols, device)
    }
}
