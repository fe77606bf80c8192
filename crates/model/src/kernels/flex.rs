//! Flex's fused cross-entropy: rows in parallel, each row read twice from L2 (max, then
//! `Σ exp`) and, backward, written once in place. Nothing `[n, vocab]`-sized is allocated
//! besides the gradient, and not even that when the logits are no longer shared.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{cross_entropy, simd, KernelBackend};

impl KernelBackend for Flex {
    fn lm_head_logits(hidden: FlexTensor, weight: FlexTensor) -> FlexTensor {
        if hidden.dtype() != DType::F32 || weight.dtype() != DType::F32 {
            return Flex::float_matmul(hidden, Flex::float_transpose(weight));
        }
        let (hidden, weight) = (contiguous(hidden), contiguous(weight));
        let ((n, d), (vocab, d_w)) = (rows(&hidden), rows(&weight));
        assert_eq!(
            d, d_w,
            "LM head: hidden [{n}, {d}] against weight [{vocab}, {d_w}]"
        );
        let (h, w): (&[f32], &[f32]) = (hidden.storage(), weight.storage());
        let mut logits: Vec<f32> = Vec::with_capacity(n * vocab);
        // SAFETY: `logits` has room for the n × vocab outputs, which gemm writes without
        // reading (`read_dst = false`) before `set_len`; `h` is [n, d] row-major and `w`
        // is [vocab, d] row-major, read as its transpose [d, vocab] by the strides.
        unsafe {
            gemm::gemm(
                n,
                vocab,
                d,
                logits.as_mut_ptr(),
                1,
                vocab as isize,
                false,
                h.as_ptr(),
                1,
                d as isize,
                w.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
            logits.set_len(n * vocab);
        }
        FlexTensor::from_data(TensorData::new(logits, [n, vocab]))
    }

    fn cross_entropy_forward(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        if logits.dtype() != DType::F32 {
            return cross_entropy::forward_default::<Flex>(logits, targets);
        }
        let logits = contiguous(logits);
        let (n, vocab) = rows(&logits);
        let targets = target_ids(&targets, n, vocab);
        let x: &[f32] = logits.storage();
        let mut nll = vec![0f32; n];
        let mut lse = vec![0f32; n];
        x.par_chunks(vocab.max(1))
            .zip(nll.par_iter_mut().zip(lse.par_iter_mut()))
            .zip(targets.par_iter())
            .for_each(|((row, (nll, lse)), &target)| {
                let max = simd::max(row);
                let log_sum_exp = max + simd::sum_exp(row, max).ln() as f32;
                *lse = log_sum_exp;
                if target >= 0 {
                    *nll = log_sum_exp - row[target as usize];
                }
            });
        (vector(nll), vector(lse))
    }

    fn cross_entropy_backward(
        logits: FlexTensor,
        targets: FlexTensor,
        lse: FlexTensor,
        grad: FlexTensor,
    ) -> FlexTensor {
        if logits.dtype() != DType::F32 {
            return cross_entropy::backward_default::<Flex>(logits, targets, lse, grad);
        }
        let mut out = contiguous(logits);
        let (n, vocab) = rows(&out);
        let targets = target_ids(&targets, n, vocab);
        let lse = contiguous(lse);
        let grad = contiguous(grad);
        let (lse, grad): (&[f32], &[f32]) = (lse.storage(), grad.storage());
        // Copy-on-write: in place when the autodiff node held the last reference.
        let dx: &mut [f32] = out.storage_mut();
        dx.par_chunks_mut(vocab.max(1))
            .zip(targets.par_iter())
            .enumerate()
            .for_each(|(i, (row, &target))| {
                if target < 0 {
                    row.fill(0.0);
                    return;
                }
                simd::scaled_exp(row, lse[i], grad[i]); // grad · softmax
                row[target as usize] -= grad[i]; // − grad · one-hot
            });
        out
    }
}

/// A tensor whose storage is exactly its elements, in order.
fn contiguous(t: FlexTensor) -> FlexTensor {
    let exact = t.layout().num_elements() * std::mem::size_of::<f32>() == t.bytes().len();
    match t.is_contiguous() && t.layout().start_offset() == 0 && exact {
        true => t,
        false => t.to_contiguous(),
    }
}

fn rows(logits: &FlexTensor) -> (usize, usize) {
    let dims = logits.layout().shape().as_slice();
    assert_eq!(
        dims.len(),
        2,
        "cross-entropy: logits must be [n, vocab], got {dims:?}"
    );
    (dims[0], dims[1])
}

/// The targets as i64, checked against the vocabulary (negative means ignored).
fn target_ids(targets: &FlexTensor, n: usize, vocab: usize) -> Vec<i64> {
    let ids: Vec<i64> = targets
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(
        ids.len(),
        n,
        "cross-entropy: {} targets for {n} rows",
        ids.len()
    );
    if let Some(bad) = ids.iter().find(|&&t| t >= vocab as i64) {
        panic!("cross-entropy: target {bad} is outside the vocabulary of {vocab}");
    }
    ids
}

fn vector(v: Vec<f32>) -> FlexTensor {
    let n = v.len();
    FlexTensor::from_data(TensorData::new(v, [n]))
}
