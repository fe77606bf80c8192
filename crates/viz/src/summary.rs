//! What each head does, in four numbers, after TransformerLens's head detectors:
//!
//! | score | on | definition (queries `q ≥ 1`; query 0 can only attend to itself) |
//! |---|---|---|
//! | `entropy` | the input | mean over queries of `−Σₖ p ln p`, in nats: 0 is one key, `ln(q+1)` uniform |
//! | `sink` | the input | mean attention to the first token (the "attention sink") |
//! | `previous_token` | the input | mean attention to the token just before |
//! | `induction` | a repeated random sequence | mean attention, in the second copy, to the token after the query's earlier occurrence |
//!
//! The induction probe is `period` seeded random tokens followed by the same tokens again:
//! a head that completes patterns (`[A][B] … [A] → [B]`) looks from the second `A` at the
//! first `B`, that is from query `q` at key `q − period + 1`.

use llm_model::{Gpt, KernelBackend};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::attention::{attention_by_layer, LayerAttention, ModelShape};
use crate::error::Result;

/// The longest half of the induction probe (TransformerLens uses 50 too).
pub const INDUCTION_PERIOD: usize = 50;

/// One head's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadScores {
    pub layer: usize,
    pub head: usize,
    pub entropy: f64,
    pub sink: f64,
    pub previous_token: f64,
    pub induction: f64,
}

/// The induction probe: `ids` is `period` random tokens, twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InductionProbe {
    pub seed: u64,
    pub period: usize,
    /// The induction score of a head that spreads its attention evenly: the mean of
    /// `1/(q+1)` over the second copy. A score near it means no induction.
    pub uniform_score: f64,
    pub ids: Vec<u32>,
}

impl InductionProbe {
    /// `period` = min(50, n_positions / 2) tokens drawn uniformly below the vocabulary's
    /// last id (`<|endoftext|>` in GPT-2), with a seeded ChaCha8, then repeated.
    pub fn new(shape: &ModelShape, seed: u64) -> Self {
        let period = INDUCTION_PERIOD.min(shape.n_positions / 2).max(1);
        let high = shape.vocab_size.saturating_sub(1).max(1) as u32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let half: Vec<u32> = (0..period).map(|_| rng.random_range(0..high)).collect();
        let uniform: f64 = (period..2 * period).map(|q| 1.0 / (q + 1) as f64).sum();
        InductionProbe {
            seed,
            period,
            uniform_score: uniform / period as f64,
            ids: [half.clone(), half].concat(),
        }
    }
}

/// `summary.json`: every head of every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: ModelShape,
    /// Tokens of the input the first three scores were measured on.
    pub tokens: usize,
    pub induction_probe: InductionProbe,
    /// In layer order, then head order.
    pub heads: Vec<HeadScores>,
}

/// Scores every head: the pattern scores on `input` (every layer's attention for the
/// user's text), the induction score by running the model on the probe.
pub fn summarize<B: KernelBackend>(
    model: &Gpt<B>,
    shape: &ModelShape,
    input: &[LayerAttention],
    seed: u64,
    device: &B::Device,
) -> Result<Summary> {
    let probe = InductionProbe::new(shape, seed);
    let on_probe = attention_by_layer(model, &probe.ids, device)?;
    let period = probe.period;
    let heads = (input.iter().zip(&on_probe).enumerate())
        .flat_map(|(layer, (att, on_probe))| {
            (0..att.n_head).map(move |head| head_scores(layer, head, att, on_probe, period))
        })
        .collect();
    Ok(Summary {
        model: shape.clone(),
        tokens: input.first().map_or(0, |a| a.t),
        induction_probe: probe,
        heads,
    })
}

/// One head's scores: the pattern scores on `input`, induction on `on_probe` (the
/// attention of the same layer on a probe of this `period`).
pub fn head_scores(
    layer: usize,
    head: usize,
    input: &LayerAttention,
    on_probe: &LayerAttention,
    period: usize,
) -> HeadScores {
    HeadScores {
        layer,
        head,
        entropy: mean_over_queries(input, head, entropy),
        sink: mean_over_queries(input, head, |row| row[0] as f64),
        previous_token: mean_over_queries(input, head, |row| row[row.len() - 2] as f64),
        induction: induction_score(on_probe, head, period),
    }
}

/// The mean of `score(row)` over the queries `1..t` (0 for a single token).
fn mean_over_queries(att: &LayerAttention, head: usize, score: impl Fn(&[f32]) -> f64) -> f64 {
    if att.t < 2 {
        return 0.0;
    }
    let total: f64 = (1..att.t).map(|q| score(att.row(head, q))).sum();
    total / (att.t - 1) as f64
}

/// `−Σ p ln p` of one distribution, in nats.
pub fn entropy(row: &[f32]) -> f64 {
    (row.iter())
        .filter(|&&p| p > 0.0)
        .map(|&p| -(p as f64) * (p as f64).ln())
        .sum()
}

/// Mean attention from query `q` to key `q − period + 1`, over the second copy.
pub fn induction_score(att: &LayerAttention, head: usize, period: usize) -> f64 {
    let queries = period..att.t.min(2 * period);
    if queries.is_empty() {
        return 0.0;
    }
    let n = queries.len();
    let total: f64 = queries
        .map(|q| att.row(head, q)[q + 1 - period] as f64)
        .sum();
    total / n as f64
}
