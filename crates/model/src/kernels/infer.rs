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

pub(super) fn dequantize<B: Backend>(weight: &Q8Matrix, device: &B::Device) -> FloatTensor<B> {
    let data = TensorData::new(weight.dequantize(), [weight.n, weight.k]);
    prim(Tensor::<B, 2>::from_data(data, device))
}

/// The first cached position any of segment `s`'s tokens sees: its first token's window
/// starts there (`0` without a window).
fn first_key(s: &Segment, window: Option<usize>) -> usize {
    window.map_or(0, |w| (s.pos + 1).saturating_sub(w))
}

/// Which of the keys `from..pos + len` each new token must not see, `[1, h, len, keys]`
/// (`true` hides): query `i` sees keys up to `pos + i`, and with a window only the last
/// `window` of them. None when nothing is hidden (one new token). Spelled out rather than
/// `is_causal`, whose alignment for `len < keys` a backend may choose.
fn hidden_mask<B: Backend>(
    s: &Segment,
    from: usize,
    window: Option<usize>,
    h: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    if s.len == 1 {
        return None;
    }
    let keys = s.pos + s.len - from;
    let w = window.unwrap_or(usize::MAX);
    let hidden: Vec<bool> = (0..s.len)
        .flat_map(|i| {
            let at = s.pos + i;
            (from..s.pos + s.len).map(move |j| j > at || at - j >= w)
        })
        .collect();
    let mask =
        Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [1, 1, s.len, keys]), device);
    Some(mask.expand([1, h, s.len, keys]))
}

/// Grouped-query attention's sharing: `[1, kv, t, d]` → `[1, h, t, d]`, key/value head `j`
/// serving query heads `j·g .. (j+1)·g`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, h: usize) -> Tensor<B, 4> {
    let [b, kv, t, d] = x.dims();
    if kv == h {
        return x;
    }
    x.unsqueeze_dim::<5>(2) // [b, kv, 1, t, d]
        .expand([b, kv, h / kv, t, d])
        .reshape([b, h, t, d])
}

pub(super) fn cached_attention<B: Backend>(
    qkv: FloatTensor<B>,
    k_cache: FloatTensor<B>,
    v_cache: FloatTensor<B>,
    segments: &[Segment],
    window: Option<usize>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let qkv = float::<B, 2>(qkv); // [n_tokens, (h + 2·kv)·d]
    let (mut kc, mut vc) = (float::<B, 4>(k_cache), float::<B, 4>(v_cache)); // [slots, kv, cap, d]
    let [_, kv, _, d] = kc.dims();
    let h = qkv.dims()[1] / d - 2 * kv;
    let stored = kc.dtype(); // f32 or f16; attention runs in the queries' dtype
    let compute = qkv.dtype();
    let mut ys = Vec::with_capacity(segments.len());
    let mut row = 0;
    for s in segments {
        let part = qkv.clone().narrow(0, row, s.len); // [len, (h + 2·kv)·d]
        let heads = |first: usize, n: usize| {
            part.clone()
                .narrow(1, first * d, n * d)
                .reshape([1, s.len, n, d])
                .swap_dims(1, 2) // [1, n, len, d]
        };
        let new = [s.slot..s.slot + 1, 0..kv, s.pos..s.pos + s.len, 0..d];
        kc = kc.slice_assign(new.clone(), heads(h, kv).cast(stored));
        vc = vc.slice_assign(new, heads(h + kv, kv).cast(stored));
        let from = first_key(s, window);
        let seen = [s.slot..s.slot + 1, 0..kv, from..s.pos + s.len, 0..d];
        let keys = repeat_kv(kc.clone().slice(seen.clone()).cast(compute), h);
        let values = repeat_kv(vc.clone().slice(seen).cast(compute), h);
        let y = attention(
            heads(0, h),
            keys,
            values,
            hidden_mask::<B>(s, from, window, h, &qkv.device()),
            None,
            AttentionModuleOptions::default(),
        ); // [1, h, len, d]
        ys.push(y.swap_dims(1, 2).reshape([s.len, h * d])); // [len, h·d]
        row += s.len;
    }
    (prim(Tensor::cat(ys, 0)), prim(kc), prim(vc))
}
