//! Multiple-choice evaluation in completion style (HellaSwag, as build-nanogpt and llm.c
//! score it): the model reads the context, then each ending; the ending it finds least
//! surprising is its answer.
//!
//! - context tokens = encode(ctx), ending tokens = encode(" " + ending) (GPT-2's byte-level
//!   BPE); with another tokenizer (a Llama's), the ending is what encode(ctx + " " + ending)
//!   adds after encode(ctx), as lm-evaluation-harness splits it;
//! - an ending's loss is the cross-entropy summed over its own tokens only;
//! - `acc` picks the lowest summed loss, `acc_norm` the lowest mean loss (per token).
//!
//! Rows (context + one ending) are scored in batches, padded on the right: under the causal
//! mask padding changes no real position, so batching gives the numbers of one at a time.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use llm_bpe::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::kernels::KernelBackend;
use crate::loss::{token_nll, IGNORE_INDEX};
use crate::model::Gpt;

/// One question: a context, its candidate endings, and the right one. Other fields of a
/// line (HellaSwag's `ind`, `activity_label`, …) are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct McItem {
    pub ctx: String,
    pub endings: Vec<String>,
    pub label: usize,
}

/// How the model scored one item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McScore {
    /// The ending with the lowest summed loss.
    pub pred: usize,
    /// The ending with the lowest mean loss per token.
    pub pred_norm: usize,
    pub label: usize,
    /// Per ending: the summed cross-entropy of its tokens.
    pub losses: Vec<f64>,
    /// Per ending: the mean cross-entropy per token.
    pub mean_losses: Vec<f64>,
}

/// Accuracies over scored items.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McSummary {
    pub acc: f64,
    pub acc_norm: f64,
    pub n: usize,
}

impl McSummary {
    pub fn of(scores: &[McScore]) -> Self {
        let n = scores.len();
        let share = |hit: &dyn Fn(&McScore) -> bool| {
            scores.iter().filter(|s| hit(s)).count() as f64 / n.max(1) as f64
        };
        McSummary {
            acc: share(&|s| s.pred == s.label),
            acc_norm: share(&|s| s.pred_norm == s.label),
            n,
        }
    }
}

/// Reads a JSON-lines file of items; an error names the line.
pub fn read_items(path: &Path) -> Result<Vec<McItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |m: String| ModelError::file(path, format!("line {}: {m}", i + 1));
        let item: McItem = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "expected {{\"ctx\": text, \"endings\": [texts], \"label\": index}}: {e}"
            ))
        })?;
        if item.endings.is_empty() {
            return Err(bad("\"endings\" is empty".into()));
        }
        if item.label >= item.endings.len() {
            return Err(bad(format!(
                "\"label\" {} is not an index into the {} endings",
                item.label,
                item.endings.len()
            )));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(ModelError::file(path, "holds no items"));
    }
    Ok(items)
}

/// One row to score: context + ending tokens, and where the ending starts.
struct Row {
    tokens: Vec<u32>,
    ending_start: usize,
}

/// The rows of an item, one per ending, the context cut on the left to fit `n_positions`.
fn rows_of(item: &McItem, tok: &Tokenizer, n_positions: usize) -> Result<Vec<Row>> {
    let ctx = tok.encode_ordinary(&item.ctx);
    if ctx.is_empty() {
        return Err(ModelError::Input("an item's \"ctx\" is empty".into()));
    }
    let mut rows = Vec::with_capacity(item.endings.len());
    for ending in &item.endings {
        let end = match tok.is_hf() {
            false => tok.encode_ordinary(&format!(" {ending}")),
            true => {
                let whole = tok.encode_ordinary(&format!("{} {ending}", item.ctx));
                whole[ctx.len().min(whole.len())..].to_vec()
            }
        };
        if end.is_empty() || end.len() >= n_positions {
            return Err(ModelError::Input(format!(
                "the ending {ending:?} has {} tokens: it needs 1 to {} (the model's context less one)",
                end.len(),
                n_positions - 1
            )));
        }
        let keep = ctx.len().min(n_positions - end.len()); // ≥ 1
        let mut tokens = ctx[ctx.len() - keep..].to_vec();
        tokens.extend(end);
        rows.push(Row {
            tokens,
            ending_start: keep,
        });
    }
    Ok(rows)
}

/// Summed cross-entropy of each row's ending tokens, `rows_per_batch` rows per forward
/// pass, right-padded with token 0.
fn row_losses<B: KernelBackend>(
    model: &Gpt<B>,
    rows: &[Row],
    rows_per_batch: usize,
    device: &B::Device,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len());
    for batch in rows.chunks(rows_per_batch.max(1)) {
        let t = batch.iter().map(|r| r.tokens.len()).max().unwrap_or(1);
        let b = batch.len();
        let (mut ids, mut targets) = (vec![0i64; b * t], vec![IGNORE_INDEX; b * t]);
        for (i, row) in batch.iter().enumerate() {
            for (p, &id) in row.tokens.iter().enumerate() {
                ids[i * t + p] = id as i64;
                // Position p predicts token p + 1: score it if that token is the ending's.
                if p + 1 >= row.ending_start && p + 1 < row.tokens.len() {
                    targets[i * t + p] = row.tokens[p + 1] as i64;
                }
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [b * t]), device);
        let logits = model.forward(ids); // [b, t, vocab]
        let v = logits.dims()[2];
        let nll = token_nll(logits.reshape([b * t, v]), targets); // [b·t], 0 where ignored
        let sums = nll.reshape([b, t]).sum_dim(1); // [b, 1]
        out.extend(sums.into_data().iter::<f32>().map(f64::from));
    }
    out
}

/// Every item's rows (context + one ending each) for a model of `n_positions` and
/// `vocab_size`; an ending too long or a token the model lacks is an error.
fn all_rows(
    items: &[McItem],
    tok: &Tokenizer,
    n_positions: usize,
    vocab_size: usize,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for item in items {
        rows.extend(rows_of(item, tok, n_positions)?);
    }
    if let Some(&id) = rows
        .iter()
        .flat_map(|r| &r.tokens)
        .find(|&&id| id as usize >= vocab_size)
    {
        return Err(ModelError::TokenOutOfRange { id, vocab_size });
    }
    Ok(rows)
}

/// Checks, without a model, that [`score_items`] can score every item with a model of
/// `n_positions` and `vocab_size`: a run checks its items before it starts.
pub fn check_items(
    items: &[McItem],
    tok: &Tokenizer,
    n_positions: usize,
    vocab_size: usize,
) -> Result<()> {
    all_rows(items, tok, n_positions, vocab_size).map(|_| ())
}

/// Scores every item, `rows_per_batch` rows (context + one ending) per forward pass.
pub fn score_items<B: KernelBackend>(
    model: &Gpt<B>,
    tok: &Tokenizer,
    items: &[McItem],
    rows_per_batch: usize,
    device: &B::Device,
) -> Result<Vec<McScore>> {
    let rows = all_rows(items, tok, model.n_positions(), model.vocab_size())?;
    let sums = row_losses(model, &rows, rows_per_batch, device);
    let mut scores = Vec::with_capacity(items.len());
    let mut at = 0;
    for item in items {
        let n = item.endings.len();
        let losses = sums[at..at + n].to_vec();
        let mean_losses: Vec<f64> = (rows[at..at + n].iter().zip(&losses))
            .map(|(r, l)| l / (r.tokens.len() - r.ending_start) as f64)
            .collect();
        at += n;
        scores.push(McScore {
            pred: argmin(&losses),
            pred_norm: argmin(&mean_losses),
            label: item.label,
            losses,
            mean_losses,
        });
    }
    Ok(scores)
}

/// The first index of the smallest value.
fn argmin(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] < v[best] { i } else { best })
}
