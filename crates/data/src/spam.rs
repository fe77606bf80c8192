//! The SMS Spam Collection for classification fine-tuning (chapter 6 of "LLMs from
//! scratch"): `label<TAB>message` lines, a balanced subsample, a 70/10/20 split.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use llm_bpe::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batcher::int_tensor;
use crate::error::{DataError, Result};
use crate::split::seeded_split;

/// One message: label 1 = spam, 0 = ham.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpamExample {
    pub label: u32,
    pub text: String,
}

/// Reads `label<TAB>message` lines (no quoting: messages may contain `"`). A line without a
/// tab, or with a label other than `ham`/`spam`, is an error naming its line.
pub fn load_sms(path: &Path) -> Result<Vec<SpamExample>> {
    let text = crate::text::read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| DataError::Jsonl {
            path: path.into(),
            line: i + 1,
            message: m.to_string(),
        };
        let (label, message) = line
            .split_once('\t')
            .ok_or_else(|| err("expected `label<TAB>message`"))?;
        let label = match label {
            "ham" => 0,
            "spam" => 1,
            _ => {
                return Err(err(&format!(
                    "unknown label {label:?} (expected ham or spam)"
                )))
            }
        };
        out.push(SpamExample {
            label,
            text: message.to_string(),
        });
    }
    Ok(out)
}

/// Every spam message plus as many ham messages, drawn with a seed (ham first, then spam).
pub fn balanced(examples: &[SpamExample], seed: u64) -> Vec<SpamExample> {
    let spam: Vec<SpamExample> = examples.iter().filter(|e| e.label == 1).cloned().collect();
    let mut ham: Vec<SpamExample> = examples.iter().filter(|e| e.label == 0).cloned().collect();
    ham.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    ham.truncate(spam.len());
    ham.extend(spam);
    ham
}

/// The seeded 70 / 10 / 20 split into train, validation and test.
pub fn split_spam(
    examples: &[SpamExample],
    seed: u64,
) -> Result<(Vec<SpamExample>, Vec<SpamExample>, Vec<SpamExample>)> {
    let mut parts = seeded_split(examples, &[0.7, 0.1, 0.2], seed)?.into_iter();
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    Ok((
        a.unwrap_or_default(),
        b.unwrap_or_default(),
        c.unwrap_or_default(),
    ))
}

/// A tokenized message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpamItem {
    pub ids: Vec<u32>,
    pub label: u32,
}

/// Tokenized messages, each cut to at most `max_length` tokens.
#[derive(Clone, Debug)]
pub struct SpamDataset {
    items: Vec<SpamItem>,
}

impl SpamDataset {
    pub fn new(examples: &[SpamExample], tok: &Tokenizer, max_length: Option<usize>) -> Self {
        let items = examples
            .iter()
            .map(|e| {
                let mut ids = tok.encode_ordinary(&e.text);
                if let Some(m) = max_length {
                    ids.truncate(m);
                }
                SpamItem {
                    ids,
                    label: e.label,
                }
            })
            .collect();
        SpamDataset { items }
    }

    /// The longest message, in tokens (the walkthrough pads every batch to this).
    pub fn longest(&self) -> usize {
        self.items.iter().map(|i| i.ids.len()).max().unwrap_or(0)
    }
}

impl Dataset<SpamItem> for SpamDataset {
    fn get(&self, index: usize) -> Option<SpamItem> {
        self.items.get(index).cloned()
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Padded messages `[batch, len]`, labels `[batch]`, and the index of each message's last
/// real token `[batch]` (where a classifier reads its logits).
#[derive(Clone, Debug)]
pub struct SpamBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub labels: Tensor<B, 1, Int>,
    pub last_index: Tensor<B, 1, Int>,
}

/// Pads with `pad_id` (50256) to `pad_to` tokens, or to the longest message in the batch.
#[derive(Clone, Debug)]
pub struct SpamBatcher {
    pub pad_id: u32,
    pub pad_to: Option<usize>,
}

impl Default for SpamBatcher {
    fn default() -> Self {
        SpamBatcher {
            pad_id: llm_bpe::END_OF_TEXT_ID,
            pad_to: None,
        }
    }
}

impl<B: Backend> Batcher<B, SpamItem, SpamBatch<B>> for SpamBatcher {
    fn batch(&self, items: Vec<SpamItem>, device: &B::Device) -> SpamBatch<B> {
        let longest = items.iter().map(|i| i.ids.len()).max().unwrap_or(0).max(1);
        let len = self.pad_to.unwrap_or(longest).max(1);
        let mut flat = Vec::with_capacity(items.len() * len);
        for item in &items {
            let mut row: Vec<i64> = item.ids.iter().take(len).map(|&t| t as i64).collect();
            row.resize(len, self.pad_id as i64);
            flat.extend(row);
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        let last: Vec<i64> = items
            .iter()
            .map(|i| i.ids.len().clamp(1, len) as i64 - 1)
            .collect();
        SpamBatch {
            inputs: int_tensor(flat, items.len(), len, device),
            labels: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
            last_index: Tensor::from_data(TensorData::new(last, [items.len()]), device),
        }
    }
}
