//! Cross-entropy per row: the generic default and the autodiff op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorPrimitive};

use super::KernelBackend;

/// `(nll [n], lse [n])` of `logits [n, vocab]` against `targets [n]` in plain Burn ops
/// (the max-shifted log-sum-exp, then a gather); `nll` is 0 where the target is
/// negative. On an autodiff backend its gradient is autodiff's through every op: the
/// reference the fused kernels are tested against.
pub fn nll_composite<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n, _] = logits.dims();
    let keep = targets.clone().greater_equal_elem(0); // [n]
    let safe = targets
        .mask_fill(keep.clone().bool_not(), 0)
        .unsqueeze_dim(1); // [n, 1]
    let max = logits.clone().max_dim(1).detach(); // [n, 1]
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [n, 1]
    let picked = logits.gather(1, safe); // [n, 1]
    let nll = (lse.clone() - picked).reshape([n]) * keep.float(); // [n]
    (nll, lse.reshape([n]))
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

pub(super) fn forward_default<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (nll, lse) = nll_composite(float::<B, 2>(logits), Tensor::from_primitive(targets));
    (nll.into_primitive().tensor(), lse.into_primitive().tensor())
}

pub(super) fn backward_default<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = float::<B, 2>(logits); // [n, vocab]
    let targets = Tensor::<B, 1, Int>::from_primitive(targets); // [n]
    let keep = targets.clone().greater_equal_elem(0); // [n]
    let safe = targets
        .mask_fill(keep.clone().bool_not(), 0)
        .unsqueeze_dim(1); // [n, 1]
    let grad = (float::<B, 1>(grad) * keep.float()).unsqueeze_dim::<2>(1); // [n, 1]
                                                                           // Recomputed around the row maximum, as autodiff would: `exp(x − lse)` loses ~1e-5
                                                                           // where the logits are large.
    let _ = lse;
    let softmax = softmax(logits.clone(), 1); // [n, vocab]
    let one_hot = logits
        .zeros_like()
        .scatter(1, safe, grad.ones_like(), IndexingUpdateOp::Add); // [n, vocab]
    ((softmax - one_hot) * grad).into_primitive().tensor()
}

/// The cross-entropy node: it keeps the logits, targets and log-sum-exp, and its backward
/// is the backend's `cross_entropy_backward` (one pass instead of autodiff's chain).
#[derive(Debug)]
struct CrossEntropy;

impl<B: KernelBackend> Backward<B, 1> for CrossEntropy {
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [n]
        let (logits, targets, lse) = ops.state;
        if let Some(node) = logits_node {
            let grad = B::cross_entropy_backward(logits, targets, lse, grad); // [n, vocab]
            grads.register::<B>(node.id, grad);
        }
    }
}

pub(super) fn token_nll_autodiff<B: KernelBackend, C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match CrossEntropy
        .prepare::<C>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (nll, lse) = B::cross_entropy_forward(logits.primitive.clone(), targets.clone());
            // The state holds the only other reference to the logits, so the backward
            // can write the gradient over them.
            prep.finish((logits.primitive, targets, lse), nll)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::token_nll(logits.primitive, targets)),
    }
}

/// The tied LM head and its cross-entropy as one node: it keeps the hidden states, the
/// weight, the logits, the targets and the log-sum-exp.
#[derive(Debug)]
struct LmHeadCrossEntropy;

type LmHeadState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    IntTensor<B>,
    FloatTensor<B>,
);

impl<B: KernelBackend> Backward<B, 2> for LmHeadCrossEntropy {
    type State = LmHeadState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [hidden_node, weight_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [n]
        let (hidden, weight, logits, targets, lse) = ops.state;
        let grad = B::cross_entropy_backward(logits, targets, lse, grad); // [n, vocab]
        if let Some(node) = weight_node {
            let dw = B::float_matmul(B::float_transpose(grad.clone()), hidden); // [vocab, d]
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = hidden_node {
            grads.register::<B>(node.id, B::float_matmul(grad, weight)); // [n, d]
        }
    }
}

pub(super) fn lm_head_nll_autodiff<B: KernelBackend, C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match LmHeadCrossEntropy
        .prepare::<C>([hidden.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let logits = B::lm_head_logits(hidden.primitive.clone(), weight.primitive.clone());
            let (nll, lse) = B::cross_entropy_forward(logits.clone(), targets.clone());
            let state = (hidden.primitive, weight.primitive, logits, targets, lse);
            prep.finish(state, nll)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::lm_head_nll(hidden.primitive, weight.primitive, targets))
        }
    }
}
