//! Perplexity over a long text with a sliding window (the method of Hugging Face's
//! perplexity guide): windows of `context` tokens start every `stride` tokens. With
//! `stride < context`, every token but the first is scored exactly once, in the first window
//! that reaches it, with as much context as that window gives. `stride == context` is the
//! fast, non-overlapping estimate; as in the guide, the first token of each window then has
//! no context and is not scored.

use crate::kernels::KernelBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::loss::{lm_cross_entropy, IGNORE_INDEX};
use crate::model::Gpt;

/// The result of [`perplexity`].
#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    /// Mean negative log-likelihood per scored token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Windows run.
    pub windows: usize,
}

/// One window: its token range, and the first position whose target is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    /// Position `p` predicts token `p + 1`; targets from `score_from` on are scored.
    pub score_from: usize,
}

/// The windows that score a text of `n` tokens (see the module doc).
pub fn windows(n: usize, context: usize, stride: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let (mut begin, mut prev_end) = (0, 0);
    loop {
        let end = (begin + context).min(n);
        out.push(Window {
            begin,
            end,
            score_from: prev_end.max(begin + 1),
        });
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    out
}

/// Mean loss and perplexity of `model` on `ids`, `batch_size` windows at a time.
pub fn perplexity<B: KernelBackend>(
    model: &Gpt<B>,
    ids: &[u32],
    context: usize,
    stride: usize,
    batch_size: usize,
    device: &B::Device,
) -> Result<Perplexity> {
    if ids.len() < 2 {
        return Err(ModelError::Input(format!(
            "need at least 2 tokens to score, got {}",
            ids.len()
        )));
    }
    if context < 2 || context > model.n_positions() {
        return Err(ModelError::Input(format!(
            "context must be between 2 and n_positions = {}, got {context}",
            model.n_positions()
        )));
    }
    if stride == 0 || stride > context {
        return Err(ModelError::Input(format!(
            "stride must be between 1 and the context ({context}), got {stride}"
        )));
    }
    if batch_size == 0 {
        return Err(ModelError::Input(
            "batch_size must be at least 1 window".into(),
        ));
    }
    let all = windows(ids.len(), context, stride);
    let (mut nll, mut tokens) = (0f64, 0usize);
    let mut i = 0;
    while i < all.len() {
        // A batch of windows of the same length.
        let len = all[i].end - all[i].begin;
        let mut j = i;
        while j < all.len() && j - i < batch_size && all[j].end - all[j].begin == len {
            j += 1;
        }
        let batch = &all[i..j];
        let rows: Vec<&[u32]> = batch.iter().map(|w| &ids[w.begin..w.end]).collect();
        let mut targets = Vec::with_capacity(batch.len() * len);
        let mut count = 0;
        for w in batch {
            for p in w.begin..w.end {
                // Position p predicts token p + 1.
                if p + 1 < w.end && p + 1 >= w.score_from {
                    targets.push(ids[p + 1] as i64);
                    count += 1;
                } else {
                    targets.push(IGNORE_INDEX);
                }
            }
        }
        let input = model.tokens(&rows, device)?;
        let targets =
            Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [batch.len(), len]), device);
        if count > 0 {
            let mean: f32 = lm_cross_entropy(model, input, targets).into_scalar().elem();
            nll += mean as f64 * count as f64;
            tokens += count;
        }
        i = j;
    }
    let loss = nll / tokens as f64;
    if !loss.is_finite() {
        return Err(ModelError::Input(format!(
            "the loss is not finite ({loss}): the model's outputs overflow"
        )));
    }
    Ok(Perplexity {
        loss,
        perplexity: loss.exp(),
        tokens,
        windows: all.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_but_the_first_is_scored_once() {
        let count = |n, context, stride| {
            let mut scored = vec![0; n];
            for w in windows(n, context, stride) {
                assert!(w.end - w.begin <= context);
                for count in &mut scored[w.score_from..w.end] {
                    *count += 1;
                }
            }
            scored
        };
        for (n, context, stride) in [
            (10, 4, 2),
            (10, 4, 3),
            (3, 8, 4),
            (100, 16, 5),
            (100, 16, 15),
        ] {
            let scored = count(n, context, stride);
            assert_eq!(scored[0], 0);
            assert!(
                scored[1..].iter().all(|&c| c == 1),
                "{n} {context} {stride}: {scored:?}"
            );
        }
        // Without overlap, each window's first token has no context and is skipped.
        assert_eq!(count(10, 4, 4), [0, 1, 1, 1, 0, 1, 1, 1, 0, 1]);
    }
}
