//! Next-token cross-entropy with PyTorch's `ignore_index` semantics.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Targets equal to this are ignored, as in PyTorch (`ignore_index=-100`).
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy (natural log) of `logits [batch, seq, vocab]` against
/// `targets [batch, seq]`, over the targets that are not [`IGNORE_INDEX`] (any negative
/// target is ignored). Returns a one-element tensor; NaN if every target is ignored, as in
/// PyTorch.
///
/// Burn's `CrossEntropyLoss` with `pad_tokens` divides by all tokens, not the counted ones,
/// and cannot take −100; hence this function.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logits = logits.reshape([b * t, v]); // [n, vocab]
    let targets = targets.reshape([b * t]); // [n]
    let keep = targets.clone().greater_equal_elem(0); // [n]
    let safe = targets
        .mask_fill(keep.clone().bool_not(), 0)
        .unsqueeze_dim::<2>(1); // [n, 1]

    // log Σ exp(logits) − logit[target], computed stably around the row maximum.
    let max = logits.clone().max_dim(1).detach(); // [n, 1]
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [n, 1]
    let picked = logits.gather(1, safe); // [n, 1]
    let nll = (lse - picked).reshape([b * t]); // [n]

    let weight = keep.float(); // [n]
    (nll * weight.clone()).sum() / weight.sum()
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
