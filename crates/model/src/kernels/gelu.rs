//! GPT-2's tanh GELU: the generic default, its backward, and the autodiff op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use super::KernelBackend;

/// `2·√(2/π)`: GELU's `x / (1 + e^(−u))` with `u = 2·√(2/π)·(x + 0.044715·x³)`.
const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;

/// The backward's cap on `−u` (`e^80` is finite in f32; `σ(u)` there is below 1e-34).
pub(super) const MAX_EXPONENT: f32 = 80.0;

fn float<B: Backend>(t: FloatTensor<B>) -> Tensor<B, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

pub(super) fn forward_default<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    crate::gelu_tanh(float::<B>(x)).into_primitive().tensor()
}

/// `grad · gelu'(x)` in tensor ops. With `e = e^(−u)` and `s = σ(u) = 1 / (1 + e)`,
/// `gelu'(x) = s·(1 + x·(1 − s)·u')`, and `1 − s = e·s` keeps its precision where `s → 1`
/// (a subtraction there loses it, and `x·u'` then magnifies the loss); `e` is capped at
/// `e^80`, so `e·s` stays finite where `s → 0`, and is taken before `x·u'`.
pub(super) fn backward_default<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let (x, grad) = (float::<B>(x), float::<B>(grad));
    let x2 = x.clone() * x.clone();
    let minus_u = (x2.clone() * 0.044715 + 1.0) * x.clone() * -TWO_SQRT_2_OVER_PI;
    let e = minus_u.clamp_max(MAX_EXPONENT).exp();
    let s = (e.clone() + 1.0).recip();
    let du = (x2 * (3.0 * 0.044715) + 1.0) * TWO_SQRT_2_OVER_PI; // u'(x)
    let slope = (e * s.clone() * x * du + 1.0) * s; // e·s ≤ 1 first: no overflow
    (grad * slope).into_primitive().tensor()
}

/// The GELU node: it keeps its input, and its backward is the backend's
/// `gelu_tanh_backward` (one pass instead of autodiff's chain of eight ops, each keeping
/// its own input).
#[derive(Debug)]
struct GeluTanh;

impl<B: KernelBackend> Backward<B, 1> for GeluTanh {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::gelu_tanh_backward(ops.state, grad));
        }
    }
}

pub(super) fn gelu_tanh_autodiff<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match GeluTanh
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            // The state shares `x`, so Flex writes the output to a new buffer.
            let y = B::gelu_tanh(x.primitive.clone());
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::gelu_tanh(x.primitive)),
    }
}
