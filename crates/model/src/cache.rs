//! The KV cache: each layer's keys and values of the tokens seen so far, so that generating
//! one more token costs one position of compute instead of the whole sequence.

use burn::tensor::{backend::Backend, Tensor};

/// Keys and values of one attention layer, `[batch, n_kv_head, len, head_dim]` each (with
/// RoPE, the keys already turned).
#[derive(Clone, Debug, Default)]
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> LayerCache<B> {
    /// Appends this step's keys and values and returns all of them, old and new.
    pub(crate) fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// The cache of a whole model: one [`LayerCache`] per block, and the number of positions
/// held, which is also the position of the next token.
///
/// It never grows past the model's `n_positions`: a forward that would overflow it is an
/// error ([`crate::ModelError::ContextOverflow`]) and leaves the cache unchanged.
/// [`crate::generate()`] handles a full cache with a documented sliding crop.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layer` blocks and at most `capacity` positions.
    pub fn new(n_layer: usize, capacity: usize) -> Self {
        KvCache {
            layers: (0..n_layer).map(|_| LayerCache { kv: None }).collect(),
            len: 0,
            capacity,
        }
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions this cache can hold (the model's `n_positions`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops every cached position.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            layer.kv = None;
        }
        self.len = 0;
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
