//! Next-token cross-entropy with PyTorch's `ignore_index` semantics, on the fused
//! [`KernelBackend::token_nll`] and [`KernelBackend::lm_head_nll`] ops.

use burn::tensor::{Int, Tensor, TensorPrimitive};

use crate::kernels::KernelBackend;
use crate::model::Gpt;

/// Targets equal to this are ignored, as in PyTorch (`ignore_index=-100`).
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy (natural log) of `logits [batch, seq, vocab]` against
/// `targets [batch, seq]`, over the targets that are not [`IGNORE_INDEX`] (any negative
/// target is ignored). Returns a one-element tensor; NaN if every target is ignored, as in
/// PyTorch.
///
/// Burn's `CrossEntropyLoss` with `pad_tokens` divides by all tokens, not the counted ones,
/// and cannot take −100; hence this function.
pub fn cross_entropy<B: KernelBackend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let targets = targets.reshape([b * t]); // [n]
    mean_over_counted(
        token_nll(logits.reshape([b * t, v]), targets.clone()),
        targets,
    )
}

/// [`cross_entropy`] of `model.forward(ids)`, without materialising more than it must:
/// with GPT-2's tied LM head the head and the loss are one op ([`next_token_nll`]).
pub fn lm_cross_entropy<B: KernelBackend>(
    model: &Gpt<B>,
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, t] = targets.dims();
    let targets = targets.reshape([b * t]); // [n]
    mean_over_counted(next_token_nll(model, ids, targets.clone()), targets)
}

/// The loss a language model trains on: [`lm_cross_entropy`], plus
/// `router_aux_loss_coef` × the load-balancing loss for a mixture of experts (as
/// transformers' Mixtral adds it). `[1]`.
pub fn lm_training_loss<B: KernelBackend>(
    model: &Gpt<B>,
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let coef = model.config.router_aux_loss_coef;
    match lm_losses(model, ids, targets) {
        (ce, Some(aux)) => ce + aux * coef,
        (ce, None) => ce,
    }
}

/// [`lm_cross_entropy`] and, for a mixture of experts, the load-balancing loss
/// ([`Gpt::router_aux_loss`]) of the same forward pass. `[1]` each.
pub fn lm_losses<B: KernelBackend>(
    model: &Gpt<B>,
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
) -> (Tensor<B, 1>, Option<Tensor<B, 1>>) {
    let [b, t] = targets.dims();
    let targets = targets.reshape([b * t]); // [n]
    let (hidden, routers) = model.forward_hidden_routed(ids); // [b, t, n_embd]
    let ce = mean_over_counted(head_nll(model, hidden, targets.clone()), targets);
    (ce, model.router_aux_loss(&routers))
}

/// `−log p(target)` at each position of `model` on `ids [b, t]`, against the flattened
/// `targets [b·t]`; `0` where a target is negative. `[b·t]`.
pub fn next_token_nll<B: KernelBackend>(
    model: &Gpt<B>,
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    head_nll(model, model.forward_hidden(ids), targets)
}

/// The LM head and [`token_nll`] on the final hidden states `[b, t, n_embd]`
/// ([`Gpt::forward_hidden`]): one fused op for GPT-2's tied head. `[b·t]`.
pub fn head_nll<B: KernelBackend>(
    model: &Gpt<B>,
    hidden: Tensor<B, 3>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [b, t, e] = hidden.dims();
    if let Some(head) = &model.lm_head {
        let logits = head.forward(hidden); // [b, t, vocab]
        let v = logits.dims()[2];
        return token_nll(logits.reshape([b * t, v]), targets);
    }
    let hidden = hidden.reshape([b * t, e]).into_primitive().tensor(); // [b·t, n_embd]
    let wte = model.wte.weight.val().into_primitive().tensor(); // [vocab, n_embd]
    let nll = B::lm_head_nll(hidden, wte, targets.into_primitive()); // [b·t]
    Tensor::from_primitive(TensorPrimitive::Float(nll))
}

/// `Σ nll / #(targets ≥ 0)`: NaN when every target is ignored, as in PyTorch.
fn mean_over_counted<B: KernelBackend>(
    nll: Tensor<B, 1>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let counted = targets.greater_equal_elem(0).float().sum(); // [1]
    nll.sum() / counted
}

/// `−log p(target)` of each row of `logits [n, vocab]`, `0` where the target is negative.
/// `[n]`. Differentiable, without storing the softmax.
pub fn token_nll<B: KernelBackend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let nll = B::token_nll(logits.into_primitive().tensor(), targets.into_primitive());
    Tensor::from_primitive(TensorPrimitive::Float(nll))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{ElementConversion, TensorData};

    #[test]
    fn ignored_targets_leave_the_mean() {
        let dev = Default::default();
        let logits = Tensor::<Flex, 3>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 5.0, 1.0, 1.0, 1.0],
                [1, 3, 3],
            ),
            &dev,
        );
        let lse = |r: [f64; 3]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        let nll0 = lse([1.0, 2.0, 3.0]) - 3.0;
        let nll2 = lse([1.0, 1.0, 1.0]) - 1.0;
        let targets =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![2i64, -100, 0], [1, 3]), &dev);
        let loss: f32 = cross_entropy(logits, targets).into_scalar().elem();
        assert!((loss as f64 - (nll0 + nll2) / 2.0).abs() < 1e-6, "{loss}");
    }
}
