//! Generation's ops in plain Burn tensor ops: the defaults every backend runs.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

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

pub(super) fn dequantize<B: Backend>(weight: &Q8Matrix, device: &B::Device) -> FloatTensor<B> {
    let data = TensorData::new(weight.dequantize(), [weight.n, weight.k]);
    prim(Tensor::<B, 2>::from_data(data, device))
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
        kc = kc.slice_assign(new.clone(), heads(1));
        vc = vc.slice_assign(new, heads(2));
        let seen = [s.slot..s.slot + 1, 0..h, 0..s.pos + s.len, 0..d];
        let (keys, values) = (kc.clone().slice(seen.clone()), vc.clone().slice(seen));
        let options = AttentionModuleOptions {
            is_causal: true, // aligned bottom-right: query i sees keys 0..=pos + i
            ..Default::default()
        };
        let y = attention(heads(0), keys, values, None, None, options); // [1, h, len, d]
        ys.push(y.swap_dims(1, 2).reshape([s.len, c])); // [len, c]
        row += s.len;
    }
    (prim(Tensor::cat(ys, 0)), prim(kc), prim(vc))
}
