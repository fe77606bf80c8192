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
//! | [`KernelBackend::gelu_tanh`] (GPT-2's GELU, also at inference) | `x / (1 + e^(−2·√(2/π)·(x + 0.044715·x³)))` in tensor ops | one vectorised pass, in place | [`KernelBackend::gelu_tanh_backward`]: the derivative in tensor ops; Flex: one pass, in place over the gradient |
//!
//! Training adds two ops without a backward: the optimizer's update (on the inner backend) and dropout's masks:
//!
//! | op | default | Flex |
//! |----|---------|------|
//! | [`KernelBackend::adamw_step`] (one parameter's AdamW update) | Burn's `AdamW`: a dozen tensor ops, a buffer each | one vectorised pass over parameter, gradient and moments, in place |
//! | [`KernelBackend::dropout_mask`] (training's masks; a constant under `Autodiff`) | Burn's Bernoulli draw from the backend's RNG | one seed from the RNG, each element's index hashed with it, in parallel |
//!
//! Generation (`llm-infer`) adds inference-only ops (no backward); wgpu and CUDA override
//! `linear_nt` only, to work around a Burn fusion bug at one row (`infer::linear_nt_fused_gpu`):
//!
//! | op | default | Flex |
//! |----|---------|------|
//! | [`KernelBackend::linear_nt`] (`x · wᵀ + b`, `w` as `[out, in]`) | matmul | a few rows: one pass over `w`, 16-lane dot products, rows of `w` across threads ([`gemv`]); many rows: gemm |
//! | [`KernelBackend::linear_q8`] (the same with [`Q8Matrix`] weights) | dequantize, then `linear_nt` | activations quantized per step, int8 dot products (VNNI / AVX2 / scalar); many rows: a band of weight rows dequantized at a time, gemm |
//! | [`KernelBackend::cached_attention`] (write new keys and values into the cache, attend) | `slice_assign` + Burn's attention per sequence | written in place; every (sequence, query head) in parallel, grouped heads reading their shared keys; f16 widened in registers |
//! | [`KernelBackend::run_pass`] (where a forward pass runs) | the caller's thread | a thread of the rayon pool |
//!
//! Adding an op: a method here with its default body, an override in [`flex`] if it pays,
//! and a `Backward` in the `Autodiff` impl if it trains.

mod adamw;
mod cpu;
mod cross_entropy;
mod dropout;
#[cfg(feature = "flex")]
mod flex;
mod gelu;
#[cfg(feature = "flex")]
pub mod gemv;
mod infer;
pub mod q8;
pub mod simd;

pub use adamw::AdamWStep;
pub use cpu::{host_summary, kernel_level, KERNELS_ENV};
pub use infer::Segment;
pub use q8::{Q8Matrix, Q8_BLOCK};

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Device, FloatDType, Shape};

pub use cross_entropy::nll_composite;

/// Burn's `Backend` with llm-e2e's own ops. Every backend llm-e2e compiles in implements
/// it (see the impls below); a new backend needs one line.
pub trait KernelBackend: Backend {
    /// Whether the backend computes on the host's CPU, whose one device several
    /// data-parallel peers may share (each then uses a share of the cores).
    const ON_CPU: bool = false;

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

    /// A dropout mask of `shape`: each element `1 / keep` with probability `keep`, else 0,
    /// drawn from this backend's seeded RNG. A constant of the graph (no gradient flows
    /// into it). The default is Burn's Bernoulli draw; Flex hashes each element's index
    /// with one seed from the RNG, in parallel ([`dropout`]).
    fn dropout_mask(
        shape: Shape,
        keep: f64,
        device: &Device<Self>,
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        dropout::mask_default::<Self>(shape, keep, device, dtype)
    }

    /// One AdamW update ([`AdamWStep`]) of `param` by `grad`, from the moments
    /// `(moment_1, moment_2)` (`None` before the first update): `(param, moment_1,
    /// moment_2)` after it, the same shapes. The default is Burn's `AdamW` in tensor ops;
    /// Flex makes one pass, in place where it holds the only reference. Optimizers run it
    /// on the inner backend (`Autodiff` passes it there: no graph).
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<(FloatTensor<Self>, FloatTensor<Self>)>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adamw::step_default::<Self>(param, grad, moments, step)
    }

    /// `x [m, k] · weightᵀ + bias` for `weight [n, k]` (one row per output, as
    /// `nn.Linear`) and `bias [n]`: `[m, n]`. Inference only.
    fn linear_nt(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        infer::linear_nt::<Self>(x, weight, bias)
    }

    /// [`Self::linear_nt`] with Q8_0 weights. The default dequantizes them first.
    fn linear_q8(
        x: FloatTensor<Self>,
        weight: &Q8Matrix,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let w = infer::dequantize::<Self>(weight, &Self::float_device(&x));
        Self::linear_nt(x, w, bias)
    }

    /// GPT-2's tanh GELU of a matrix `x [m, n]`, elementwise (the formula of
    /// [`crate::gelu_tanh`]). Differentiable on `Autodiff`, by
    /// [`Self::gelu_tanh_backward`].
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::forward_default::<Self>(x)
    }

    /// The gradient of [`Self::gelu_tanh`] at `x [m, n]` given the gradient `grad [m, n]`
    /// of its output: `grad · gelu'(x)`. It may reuse `grad`'s memory.
    fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::backward_default::<Self>(x, grad)
    }

    /// Runs `pass`, a whole forward pass of many small ops, where this backend's ops run
    /// best. The default runs it here. Flex runs it on a thread of its pool, so that each
    /// op's parallel loop starts on a worker instead of waking the pool and putting the
    /// caller to sleep (two context switches per op, about 1 ms per GPT-2 decode step).
    fn run_pass<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
        pass()
    }

    /// Causal attention of new tokens over a KV cache. `qkv [n_tokens, (h + 2·kv)·d]` holds
    /// the queries of `h` heads and the keys and values of `kv` heads (`kv` divides `h`;
    /// grouped-query attention when fewer) of the [`Segment`]s' tokens, one segment after
    /// the other; `k_cache`, `v_cache` are `[slots, kv, capacity, d]`. Each segment's keys
    /// and values are written at its positions, then each of its tokens attends to its
    /// slot's positions up to its own (the last `window` of them, if given), query head
    /// `i` to key/value head `i / (h / kv)`. Returns `(y [n_tokens, h·d], k_cache, v_cache)`.
    fn cached_attention(
        qkv: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        segments: &[Segment],
        window: Option<usize>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        infer::cached_attention::<Self>(qkv, k_cache, v_cache, segments, window)
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
    const ON_CPU: bool = B::ON_CPU;

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

    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::gelu_tanh_autodiff::<B, C>(x)
    }

    fn dropout_mask(
        shape: Shape,
        keep: f64,
        device: &Device<Self>,
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::dropout_mask(shape, keep, device, dtype))
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<(FloatTensor<Self>, FloatTensor<Self>)>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let inner = |(m, v)| (Self::inner(m), Self::inner(v));
        let (p, m, v) = B::adamw_step(
            Self::inner(param),
            Self::inner(grad),
            moments.map(inner),
            step,
        );
        (
            Self::from_inner(p),
            Self::from_inner(m),
            Self::from_inner(v),
        )
    }
}

#[cfg(feature = "ndarray")]
impl KernelBackend for burn::backend::NdArray {
    const ON_CPU: bool = true;
}

/// Burn's fused GPU backends: the default ops, `linear_nt` with its workaround.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
macro_rules! fused_gpu_backend {
    ($backend:ty) => {
        impl KernelBackend for $backend {
            fn linear_nt(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: Option<FloatTensor<Self>>,
            ) -> FloatTensor<Self> {
                infer::linear_nt_fused_gpu::<Self>(x, weight, bias)
            }
        }
    };
}

#[cfg(feature = "wgpu")]
fused_gpu_backend!(burn::backend::Wgpu);

#[cfg(feature = "cuda")]
fused_gpu_backend!(burn::backend::Cuda);
