//! The KV cache of a running batch: for each layer, keys and values of every slot,
//! `[slots, n_head, capacity, head_dim]`, allocated once. Each step writes its new
//! positions in place; nothing grows, so its memory is known up front ([`SlotCache::bytes`]).

use burn::tensor::{Tensor, TensorPrimitive};
use llm_model::{Gpt2Config, KernelBackend, Segment};

/// Keys and values for `slots` sequences of at most `capacity` positions each.
#[derive(Debug)]
pub struct SlotCache<B: KernelBackend> {
    /// Per layer; `None` only while a step holds it.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    slots: usize,
    capacity: usize,
    bytes: usize,
}

impl<B: KernelBackend> SlotCache<B> {
    /// Zeroed keys and values for `slots` sequences of `config.n_positions` positions.
    pub fn new(config: &Gpt2Config, slots: usize, device: &B::Device) -> Self {
        let (h, cap) = (config.n_head, config.n_positions);
        let d = config.n_embd / h;
        let shape = [slots, h, cap, d];
        let layers = (0..config.n_layer)
            .map(|_| Some((Tensor::zeros(shape, device), Tensor::zeros(shape, device))))
            .collect();
        SlotCache {
            layers,
            slots,
            capacity: cap,
            bytes: 2 * config.n_layer * slots * cap * h * d * 4,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions per slot: the model's context.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by keys and values (f32).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Layer `layer`'s attention for the segments' tokens `qkv [n, 3c]`: writes their keys
    /// and values at the segments' positions, returns `[n, c]`. Segments must fit the cache.
    pub fn attend(
        &mut self,
        layer: usize,
        qkv: Tensor<B, 2>,
        segments: &[Segment],
    ) -> Tensor<B, 2> {
        let (k, v) = self.layers[layer]
            .take()
            .expect("a cache layer is held by one step at a time");
        let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
        let (y, k, v) =
            B::cached_attention(qkv.into_primitive().tensor(), prim(k), prim(v), segments);
        let float = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
        self.layers[layer] = Some((float(k), float(v)));
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }
}
