//! Generation's ops in plain Burn tensor ops: the defaults every backend runs.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};

use super::q8::Q8Matrix;

/// One sequence's share of a forward pass over the KV cache: `len` new tokens of cache slot
/// `slot`, at positions `pos..pos + len` (the slot already holds positions `0..pos`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub slot: usize,
    pub pos: usize,
    pub len: usize,
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

pub(super) fn linear_nt<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let y = float::<B, 2>(x).matmul(float::<B, 2>(weight).transpose()); // [m, n]
    match bias {
        Some(b) => prim(y + float::<B, 1>(b).unsqueeze::<2>()),
        None => prim(y),
    }
}

/// [`linear_nt`] for Burn's fused GPU backends (wgpu, CUDA), which in Burn 0.21 compute a
/// one-row matmul wrongly when its input is still a pending elementwise op and its output
/// feeds another (`((x·Aᵀ)·1)·Bᵀ·1` at one row of `x`; two rows are right): one row is run
/// as two copies of itself, and the first is kept. A GEMV reads the weights once either
/// way. Reproduced by `crates/infer/tests/engine.rs`'s wgpu test.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn linear_nt_fused_gpu<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let x = float::<B, 2>(x);
    if x.dims()[0] != 1 {
        return linear_nt::<B>(prim(x), weight, bias);
    }
    let two = x.repeat_dim(0, 2); // [2, k]
    prim(float::<B, 2>(linear_nt::<B>(prim(two), weight, bias)).narrow(0, 0, 1))
}

pub(super) fn gelu_tanh_default<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    prim(crate::gelu_tanh(float::<B, 2>(x)))
}

pub(super) fn dequantize<B: Backend>(weight: &Q8Matrix, device: &B::Device) -> FloatTensor<B> {
    let data = TensorData::new(weight.dequantize(), [weight.n, weight.k]);
    prim(Tensor::<B, 2>::from_data(data, device))
}

/// Which cached keys each new token must not see, `[1, h, len, pos + len]` (`true` hides):
/// query `i` sees keys `0..=pos + i`. None when nothing is hidden (one new token). Spelled
/// out rather than `is_causal`, whose alignment for `len < keys` a backend may choose.
fn future_mask<B: Backend>(
    s: &Segment,
    h: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    if s.len == 1 {
        return None;
    }
    let keys = s.pos + s.len;
    let hidden: Vec<bool> = (0..s.len)
        .flat_map(|i| (0..keys).map(move |j| j > s.pos + i))
        .collect();
    let mask =
        Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [1, 1, s.len, keys]), device);
    Some(mask.expand([1, h, s.len, keys]))
}

pub(super) fn cached_attention<B: Backend>(
    qkv: FloatTensor<B>,
    k_cache: FloatTensor<B>,
    v_cache: FloatTensor<B>,
    segments: &[Segment],
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let qkv = float::<B, 2>(qkv); // [n_tokens, 3c]
    let (mut kc, mut vc) = (float::<B, 4>(k_cache), float::<B, 4>(v_cache)); // [slots, h, cap, d]
    let [_, h, _, d] = kc.dims();
    let c = h * d;
    let stored = kc.dtype(); // f32 or f16; attention runs in the queries' dtype
    let compute = qkv.dtype();
    let mut ys = Vec::with_capacity(segments.len());
    let mut row = 0;
    for s in segments {
        let part = qkv.clone().narrow(0, row, s.len); // [len, 3c]
        let heads = |i: usize| {
            part.clone()
                .narrow(1, i * c, c)
                .reshape([1, s.len, h, d])
                .swap_dims(1, 2) // [1, h, len, d]
        };
        let new = [s.slot..s.slot + 1, 0..h, s.pos..s.pos + s.len, 0..d];
        kc = kc.slice_assign(new.clone(), heads(1).cast(stored));
        vc = vc.slice_assign(new, heads(2).cast(stored));
        let seen = [s.slot..s.slot + 1, 0..h, 0..s.pos + s.len, 0..d];
        let keys = kc.clone().slice(seen.clone()).cast(compute);
        let values = vc.clone().slice(seen).cast(compute);
        let y = attention(
            heads(0),
            keys,
            values,
            future_mask::<B>(s, h, &qkv.device()),
            None,
            AttentionModuleOptions::default(),
        ); // [1, h, len, d]
        ys.push(y.swap_dims(1, 2).reshape([s.len, c])); // [len, c]
        row += s.len;
    }
    (prim(Tensor::cat(ys, 0)), prim(kc), prim(vc))
}
