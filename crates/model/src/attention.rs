//! Causal multi-head self-attention, GPT-2's `attn`.
//!
//! One linear layer `c_attn` makes queries, keys and values for all heads at once; each head
//! attends to the positions up to its own; `c_proj` mixes the heads back into the residual
//! stream.

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use crate::cache::LayerCache;
use crate::proj::Proj;

/// GPT-2's `attn` block: `c_attn` → split heads → causal softmax(q·kᵀ/√d)·v → `c_proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[n_embd, 3·n_embd]`: q, k and v side by side (HF `Conv1D` layout: y = x·W + b).
    pub c_attn: Proj<B>,
    /// `[n_embd, n_embd]`: output projection.
    pub c_proj: Proj<B>,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    pub n_head: usize,
}

impl<B: Backend> Attention<B> {
    /// Attends over `x` (and the cached positions, if any). Returns the output and, if
    /// `want_probs`, the attention probabilities `[batch, n_head, seq, seq_total]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut LayerCache<B>>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let [b, t, c] = x.dims();
        let (h, d) = (self.n_head, c / self.n_head);
        let device = x.device();

        let qkv = self.c_attn.forward(x); // [b, t, 3c]
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * c, c) // [b, t, c]
                .reshape([b, t, h, d])
                .swap_dims(1, 2) // [b, h, t, d]
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v), // [b, h, past + t, d]
            None => (k, v),
        };
        let t_total = k.dims()[2];

        // The fused kernel is fastest but gives no probabilities and no dropout on them.
        let dropout_on = self.attn_dropout.prob > 0.0 && B::ad_enabled(&device);
        let (y, probs) = if want_probs || dropout_on {
            let scale = (d as f64).sqrt().recip();
            let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, h, t, t_total]
                                                              // Query i sits at position past + i and may see keys 0..=past + i.
            let future =
                Tensor::<B, 2, Bool>::tril_mask([t, t_total], (t_total - t) as i64, &device)
                    .unsqueeze::<4>()
                    .expand([b, h, t, t_total]);
            let probs = softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3);
            let y = self.attn_dropout.forward(probs.clone()).matmul(v); // [b, h, t, d]
            (y, want_probs.then_some(probs))
        } else {
            let options = AttentionModuleOptions {
                is_causal: true, // aligned bottom-right, so it is right with a cache too
                ..Default::default()
            };
            (attention(q, k, v, None, None, options), None) // [b, h, t, d]
        };

        let y = y.swap_dims(1, 2).reshape([b, t, c]); // [b, t, c]
        let y = self.resid_dropout.forward(self.c_proj.forward(y)); // [b, t, c]
        (y, probs)
    }
}
