//! Dropout as GPT-2 applies it, with the backend's masks
//! ([`KernelBackend::dropout_mask`]: one parallel pass on Flex).

use burn::nn::Dropout;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::KernelBackend;

/// `x · mask` while training (autodiff on and `prob > 0`), where the mask is `1 / keep`
/// with probability `keep` and 0 otherwise; `x` unchanged in evaluation. What Burn's
/// `Dropout::forward` computes, with the mask drawn by the backend's own kernel. The
/// `Dropout` module holds the probability, so records and configs are unchanged.
pub fn dropout<B: KernelBackend, const D: usize>(layer: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    if layer.prob == 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    if layer.prob >= 1.0 {
        return x.zeros_like(); // every element dropped (a mask would scale by 1/0)
    }
    let mask = B::dropout_mask(x.shape(), 1.0 - layer.prob, &x.device(), x.dtype().into());
    x * Tensor::from_primitive(TensorPrimitive::Float(mask))
}
