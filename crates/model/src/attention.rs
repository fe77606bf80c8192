//! Causal self-attention, GPT-2's `attn`, with the variants of later decoders: grouped-query
//! attention (fewer key/value heads than query heads), rotary positions and a sliding
//! window.
//!
//! One linear layer `c_attn` makes the queries of `n_head` heads and the keys and values of
//! `n_kv_head` heads at once; each head attends to the positions up to its own (the last
//! `attention_window` of them, with a window); `c_proj` mixes the heads back into the
//! residual stream.

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::cache::LayerCache;
use crate::dropout::dropout;
use crate::kernels::KernelBackend;
use crate::proj::Proj;
use crate::rope::Rope;

/// GPT-2's `attn` block: `c_attn` → split heads → (RoPE) → causal softmax(q·kᵀ/√d)·v →
/// `c_proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[n_embd, (n_head + 2·n_kv_head)·head_dim]`: q, k and v side by side (HF `Conv1D`
    /// layout: y = x·W + b).
    pub c_attn: Proj<B>,
    /// `[n_embd, n_embd]`: output projection.
    pub c_proj: Proj<B>,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    pub n_head: usize,
    /// Key/value heads; each serves `n_head / n_kv_head` query heads.
    #[module(skip)]
    pub n_kv_head: usize,
    /// Sliding-window size; `None` sees every earlier position.
    #[module(skip)]
    pub window: Option<usize>,
}

impl<B: KernelBackend> Attention<B> {
    /// Attends over `x` (and the cached positions, if any), turning queries and keys by
    /// `rope` if given. Returns the output and, if `want_probs`, the attention
    /// probabilities `[batch, n_head, seq, seq_total]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
        cache: Option<&mut LayerCache<B>>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let [b, t, c] = x.dims();
        let (h, kv, d) = (self.n_head, self.n_kv_head, c / self.n_head);

        let qkv = self.c_attn.forward(x); // [b, t, (h + 2·kv)·d]
        let split = |start: usize, heads: usize| {
            qkv.clone()
                .narrow(2, start * d, heads * d) // [b, t, heads·d]
                .reshape([b, t, heads, d])
                .swap_dims(1, 2) // [b, heads, t, d]
        };
        let (q, k, v) = (split(0, h), split(h, kv), split(h + kv, kv));
        let (q, k) = match rope {
            Some(rope) => (rope.apply(q), rope.apply(k)),
            None => (q, k),
        };
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v), // [b, kv, past + t, d]
            None => (k, v),
        };
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v)); // [b, h, t_total, d]

        let (y, probs) = self.attend(q, k, v, want_probs); // [b, h, t, d]
        let y = y.swap_dims(1, 2).reshape([b, t, c]); // [b, t, c]
        let y = dropout(&self.resid_dropout, self.c_proj.forward(y)); // [b, t, c]
        (y, probs)
    }

    /// softmax(q·kᵀ/√d + mask)·v for `q` `[b, h, t, d]` and `k`, `v` `[b, h, t_total, d]`,
    /// query `i` sitting at position `t_total − t + i`.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        want_probs: bool,
    ) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
        let [b, h, t, d] = q.dims();
        let t_total = k.dims()[2];
        let device = q.device();
        // The fused kernel is fastest but gives no probabilities and no dropout on them.
        let dropout_on = self.attn_dropout.prob > 0.0 && B::ad_enabled(&device);
        if !want_probs && !dropout_on && self.window.is_none() {
            let options = AttentionModuleOptions {
                is_causal: true, // aligned bottom-right, so it is right with a cache too
                ..Default::default()
            };
            return (attention(q, k, v, None, None, options), None);
        }
        let hidden = self
            .hidden_mask(t, t_total, &device)
            .expand([b, h, t, t_total]);
        if !want_probs && !dropout_on {
            // A window: the fused kernel with the mask.
            return (
                attention(q, k, v, Some(hidden), None, Default::default()),
                None,
            );
        }
        let scale = (d as f64).sqrt().recip();
        let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, h, t, t_total]
        let probs = softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3);
        let y = dropout(&self.attn_dropout, probs.clone()).matmul(v); // [b, h, t, d]
        (y, want_probs.then_some(probs))
    }

    /// `[1, 1, t, t_total]`, true where query `i` (at position `t_total − t + i`) may not see
    /// key `j`: a later key, or one that has left the window.
    fn hidden_mask(&self, t: usize, t_total: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        let past = t_total - t;
        let window = self.window.unwrap_or(usize::MAX);
        let mask: Vec<bool> = (0..t)
            .flat_map(|i| (0..t_total).map(move |j| j > past + i || past + i - j >= window))
            .collect();
        Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [t, t_total]), device)
            .unsqueeze::<4>()
    }

    /// Grouped-query attention: `[b, kv, t, d]` → `[b, n_head, t, d]`, key/value head `j`
    /// serving query heads `j·g .. (j+1)·g` (`g = n_head / n_kv_head`), as transformers'
    /// `repeat_kv`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, kv, t, d] = x.dims();
        let g = self.n_head / kv;
        if g == 1 {
            return x;
        }
        x.unsqueeze_dim::<5>(2) // [b, kv, 1, t, d]
            .expand([b, kv, g, t, d])
            .reshape([b, self.n_head, t, d])
    }
}
