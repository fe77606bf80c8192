//! Ops llm-e2e adds to Burn's backends, through Burn's *backend extension*.
//!
//! [`KernelBackend`] is Burn's `Backend` plus our ops. Each op has a generic default made
//! of Burn tensor ops, so every backend runs it; Flex (the default CPU backend) overrides
//! it with a fused kernel ([`flex`]); `Autodiff<B>` gives it its own backward.
//!
//! | op | default | Flex | backward |
//! |----|---------|------|----------|
//! | [`KernelBackend::token_nll`] (cross-entropy per row) | max, exp, sum, log, gather | one pass per row, vectorised `exp`, no softmax stored | softmax − one-hot, written in place over the logits |
//! | [`KernelBackend::lm_head_logits`] (`h · wteᵀ`) | matmul | gemm into a fresh buffer (Flex's matmul zero-fills and copies its output) | matmul's |
//! | [`KernelBackend::lm_head_nll`] (the two above) | both | both | one node: cross-entropy's in place, then `dh = g · wte`, `dwte = gᵀ · h` |
//!
//! Adding an op: a method here with its default body, an override in [`flex`] if it pays,
//! and a `Backward` in the `Autodiff` impl.

mod cross_entropy;
#[cfg(feature = "flex")]
mod flex;
mod simd;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};

pub use cross_entropy::nll_composite;

/// Burn's `Backend` with llm-e2e's own ops. Every backend llm-e2e compiles in implements
/// it (see the impls below); a new backend needs one line.
pub trait KernelBackend: Backend {
    /// Cross-entropy of each row of `logits [n, vocab]` against `targets [n]`:
    /// `log Σ exp(logits) − logits[target]`, and `0` where the target is negative
    /// (ignored). Returns `[n]`. Differentiable on `Autodiff`.
    fn token_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        Self::cross_entropy_forward(logits, targets).0
    }

    /// The tied LM head's logits: `hidden [n, d] · weightᵀ` for `weight [vocab, d]`
    /// (`wte`), `[n, vocab]`.
    fn lm_head_logits(hidden: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(hidden, Self::float_transpose(weight))
    }

    /// [`Self::token_nll`] of [`Self::lm_head_logits`]. On `Autodiff` it is one node: its
    /// backward writes the logits' gradient over the logits, then does the two matmuls.
    fn lm_head_nll(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::token_nll(Self::lm_head_logits(hidden, weight), targets)
    }

    /// The forward pass of [`Self::token_nll`]: `(nll [n], log-sum-exp [n])`.
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cross_entropy::forward_default::<Self>(logits, targets)
    }

    /// The gradient of [`Self::token_nll`] with respect to the logits, given the
    /// gradient `grad [n]` of its output: `grad · (softmax − one-hot)`, `0` on ignored
    /// rows. `[n, vocab]`; it may reuse the logits' memory.
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::backward_default::<Self>(logits, targets, lse, grad)
    }
}

/// An autodiff backend whose inner backend has llm-e2e's ops too: what training needs.
pub trait KernelAutodiff: AutodiffBackend<InnerBackend: KernelBackend> + KernelBackend {}

impl<B> KernelAutodiff for B
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn token_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        cross_entropy::token_nll_autodiff::<B, C>(logits, targets)
    }

    fn lm_head_nll(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::lm_head_nll_autodiff::<B, C>(hidden, weight, targets)
    }
}

#[cfg(feature = "ndarray")]
impl KernelBackend for burn::backend::NdArray {}

#[cfg(feature = "wgpu")]
impl KernelBackend for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl KernelBackend for burn::backend::Cuda {}
