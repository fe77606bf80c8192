//! Attention probabilities out of the model, and the `attention.json` they are written as.
//!
//! `Gpt::forward_with_attention` returns, per layer, `softmax(q·kᵀ/√d + causal mask)`:
//! `[batch, n_head, t, t]`, row `q` a distribution over the keys `0..=q` (later keys are
//! exactly 0). This module takes them out of the backend one layer at a time and chooses
//! the layers and heads a user asked for.

use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use llm_bpe::Tokenizer;
use llm_model::{Gpt, KernelBackend};
use serde::{Deserialize, Serialize};

use crate::error::{Result, VizError};

/// One layer's attention probabilities for one sequence: `[n_head, t, t]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAttention {
    pub n_head: usize,
    pub t: usize,
    probs: Vec<f32>,
}

impl LayerAttention {
    /// `probs` is `[n_head, t, t]`, row-major.
    pub fn new(n_head: usize, t: usize, probs: Vec<f32>) -> Result<Self> {
        if probs.len() != n_head * t * t {
            return Err(VizError::Input(format!(
                "attention of {} values is not [n_head = {n_head}, {t}, {t}]",
                probs.len()
            )));
        }
        Ok(LayerAttention { n_head, t, probs })
    }

    fn from_tensor<B: Backend>(probs: Tensor<B, 4>) -> Result<Self> {
        let [_, n_head, t, _] = probs.dims(); // [1, n_head, t, t]
        let values = probs.into_data().convert::<f32>().into_vec::<f32>();
        let values = values.map_err(|e| VizError::Input(format!("attention tensor: {e:?}")))?;
        Self::new(n_head, t, values)
    }

    /// What query `q` of `head` attends to: keys `0..=q` (the causal part of the row).
    pub fn row(&self, head: usize, q: usize) -> &[f32] {
        let start = (head * self.t + q) * self.t;
        &self.probs[start..=start + q]
    }

    /// `head`'s causal rows: `[q][0..=q]`.
    pub fn head(&self, head: usize) -> HeadMatrix {
        (0..self.t).map(|q| self.row(head, q).to_vec()).collect()
    }
}

/// A head's attention, row `q` holding the keys `0..=q`.
pub type HeadMatrix = Vec<Vec<f32>>;

/// Every layer's attention probabilities for `ids` (batch 1), layer by layer.
pub fn attention_by_layer<B: KernelBackend>(
    model: &Gpt<B>,
    ids: &[u32],
    device: &B::Device,
) -> Result<Vec<LayerAttention>> {
    let out = model.forward_with_attention(model.tokens(&[ids], device)?)?;
    // Each layer's tensor is dropped once copied out, so the two copies never coexist.
    (out.attentions.into_iter())
        .map(LayerAttention::from_tensor)
        .collect()
}

/// Which layers to look at: one index (negative counts from the end, as in Python: −1 is
/// the last layer, −2 the second-to-last) or all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerChoice {
    /// The default: the second-to-last layer, where the seed's example shows "a larger"
    /// attending to "brown suitcase" (the only layer of a one-layer model).
    #[default]
    SecondToLast,
    Index(i64),
    All,
}

impl FromStr for LayerChoice {
    type Err = VizError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "all" => Ok(LayerChoice::All),
            n => n.parse().map(LayerChoice::Index).map_err(|_| {
                VizError::Input(format!("--layer {s:?}: expected a layer index or `all`"))
            }),
        }
    }
}

impl LayerChoice {
    /// The model layers meant, for a model of `n_layer` layers.
    pub fn resolve(self, n_layer: usize) -> Result<Vec<usize>> {
        let n = n_layer as i64;
        match self {
            LayerChoice::SecondToLast => Ok(vec![n_layer.saturating_sub(2)]),
            LayerChoice::All => Ok((0..n_layer).collect()),
            LayerChoice::Index(i) if (0..n).contains(&i) => Ok(vec![i as usize]),
            LayerChoice::Index(i) if (-n..0).contains(&i) => Ok(vec![(n + i) as usize]),
            LayerChoice::Index(i) => Err(VizError::Input(format!(
                "layer {i} is out of range: the model has {n_layer} layers, so a layer is 0..={} or -{n_layer}..=-1",
                n - 1
            ))),
        }
    }
}

/// The heads meant: `heads` as given (in order, without repeats), or all when empty.
pub fn resolve_heads(heads: &[usize], n_head: usize) -> Result<Vec<usize>> {
    if let Some(h) = heads.iter().find(|&&h| h >= n_head) {
        return Err(VizError::Input(format!(
            "head {h} is out of range: the model has {n_head} heads per layer, 0..={}",
            n_head - 1
        )));
    }
    let mut out: Vec<usize> = Vec::new();
    for &h in heads {
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(if out.is_empty() {
        (0..n_head).collect()
    } else {
        out
    })
}

/// The model's shape, as the outputs record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// What `--model` named.
    pub name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
}

impl ModelShape {
    pub fn of<B: Backend>(name: &str, model: &Gpt<B>) -> Self {
        let c = &model.config;
        ModelShape {
            name: name.to_string(),
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_embd: c.n_embd,
            n_positions: c.n_positions,
            vocab_size: c.vocab_size,
        }
    }
}

/// `attention.json`: the tokens and the attention of the chosen layers and heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionFile {
    pub format_version: u32,
    pub model: ModelShape,
    /// The input text; `None` when token ids were given.
    pub text: Option<String>,
    /// Each token's text (bytes that are not whole UTF-8 characters show as U+FFFD).
    pub tokens: Vec<String>,
    pub ids: Vec<u32>,
    /// The model layer of each entry of `attention`.
    pub layers: Vec<usize>,
    /// The model head of each entry of `attention[i]`.
    pub heads: Vec<usize>,
    /// `attention[i][j][q][k]`: layer `layers[i]`, head `heads[j]`, query `q`, key
    /// `k ≤ q` (causal: row `q` holds `q + 1` keys; the later ones are 0).
    pub attention: Vec<Vec<HeadMatrix>>,
}

impl AttentionFile {
    pub const FORMAT_VERSION: u32 = 1;

    /// The chosen `layers` and `heads` of `all` (every layer's attention for `ids`).
    pub fn select(
        model: ModelShape,
        text: Option<String>,
        tokens: Vec<String>,
        ids: Vec<u32>,
        all: &[LayerAttention],
        layers: Vec<usize>,
        heads: Vec<usize>,
    ) -> Self {
        let attention = (layers.iter())
            .map(|&l| heads.iter().map(|&h| all[l].head(h)).collect())
            .collect();
        AttentionFile {
            format_version: Self::FORMAT_VERSION,
            model,
            text,
            tokens,
            ids,
            layers,
            heads,
            attention,
        }
    }

    /// The first `n` tokens only (queries and keys), for a page that must stay fast.
    pub fn first_tokens(&self, n: usize) -> AttentionFile {
        let n = n.min(self.ids.len());
        let attention = (self.attention.iter())
            .map(|layer| layer.iter().map(|head| head[..n].to_vec()).collect())
            .collect();
        AttentionFile {
            format_version: self.format_version,
            model: self.model.clone(),
            text: self.text.clone(),
            tokens: self.tokens[..n].to_vec(),
            ids: self.ids[..n].to_vec(),
            layers: self.layers.clone(),
            heads: self.heads.clone(),
            attention,
        }
    }
}

/// Each token's text, as the tokenizer spells it.
pub fn token_strings(tokenizer: &Tokenizer, ids: &[u32]) -> Result<Vec<String>> {
    (ids.iter())
        .map(|&id| {
            let bytes = tokenizer.token_bytes(id).map_err(|e| {
                VizError::Input(format!("token {id} is not in the tokenizer ({e})"))
            })?;
            Ok(String::from_utf8_lossy(bytes).into_owned())
        })
        .collect()
}
