//! The feed-forward part of a block: GPT-2's GELU MLP or Llama's SwiGLU.
//!
//! ```text
//! gelu:    x ─▶ c_fc ─▶ GELU (tanh) ─▶ c_proj ─▶ dropout
//! swiglu:  x ─▶ c_fc ─▶ [gate | up] ─▶ SiLU(gate) ⊙ up ─▶ c_proj ─▶ dropout
//! ```

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::dropout::dropout;
use crate::kernels::KernelBackend;
use crate::proj::Proj;

/// GPT-2's MLP (`c_fc` widens ×4 → GELU → `c_proj`), or SwiGLU when `gated`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[n_embd, n_inner]`; SwiGLU: `[n_embd, 2·n_inner]`, the gate then the up projection
    /// (Llama's `gate_proj` and `up_proj` side by side).
    pub c_fc: Proj<B>,
    /// `[n_inner, n_embd]` (Llama's `down_proj`).
    pub c_proj: Proj<B>,
    pub dropout: Dropout,
    /// SwiGLU rather than GELU.
    #[module(skip)]
    pub gated: bool,
}

impl<B: KernelBackend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.c_fc.forward(x); // [b, t, n_inner] or [b, t, 2·n_inner]
        let x = if self.gated {
            let i = x.dims()[2] / 2;
            silu(x.clone().narrow(2, 0, i)) * x.narrow(2, i, i) // [b, t, n_inner]
        } else {
            gelu(x)
        };
        dropout(&self.dropout, self.c_proj.forward(x)) // [b, t, n_embd]
    }
}

/// [`gelu_tanh`] through the backend's op ([`KernelBackend::gelu_tanh`]): one pass forward
/// and one backward on Flex, instead of eight tensor ops each way.
fn gelu<B: KernelBackend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, n] = x.dims();
    let x = x.reshape([b * t, n]).into_primitive().tensor(); // [b·t, n_inner]
    let y = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::gelu_tanh(x)));
    y.reshape([b, t, n]) // [b, t, n_inner]
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`),
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as the identical
/// `x · sigmoid(2·√(2/π)·(x + 0.044715·x³)) = x / (1 + exp(−z))`: on the CPU `exp` is several
/// times faster than `tanh` and `powf`, which made GELU a quarter of GPT-2's forward time.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let z = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * -TWO_SQRT_2_OVER_PI; // −z
    x / (z.exp() + 1.0)
}
