//! Preference pairs for DPO (chapter 7's bonus in "LLMs from scratch"): a prompt with a
//! chosen and a rejected response, padded, with masks that mark the response tokens.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use llm_bpe::Tokenizer;
use serde::Deserialize;

use crate::batcher::int_tensor;
use crate::error::{DataError, Result};
use crate::instruct::{format_input, InstructionExample, RESPONSE_HEADER};

/// One preference example.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PreferenceExample {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub chosen: String,
    pub rejected: String,
}

/// Reads a JSON array of `{instruction, input, chosen, rejected}` (other fields ignored).
pub fn load_preferences(path: &Path) -> Result<Vec<PreferenceExample>> {
    let text = crate::text::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| {
        DataError::file(
            path,
            format!("not a JSON array of {{instruction, input, chosen, rejected}}: {e}"),
        )
    })
}

/// A tokenized pair: full chosen and rejected texts, and the shared prompt length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceItem {
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// Tokens of prompt + response header at the start of both.
    pub prompt_len: usize,
}

/// Tokenized preference pairs.
#[derive(Clone, Debug)]
pub struct PreferenceDataset {
    items: Vec<PreferenceItem>,
}

impl PreferenceDataset {
    pub fn new(examples: &[PreferenceExample], tok: &Tokenizer) -> Result<Self> {
        let items = examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let prompt = format_input(&InstructionExample {
                    instruction: e.instruction.clone(),
                    input: e.input.clone(),
                    output: String::new(),
                });
                let encode = |response: &str| {
                    tok.encode(&format!("{prompt}{RESPONSE_HEADER}{response}"))
                        .map_err(|err| DataError::Invalid(format!("preference example {i}: {err}")))
                };
                let (chosen, rejected) = (encode(&e.chosen)?, encode(&e.rejected)?);
                let head = tok.encode_ordinary(&format!("{prompt}{RESPONSE_HEADER}"));
                let shared =
                    |ids: &[u32]| ids.iter().zip(&head).take_while(|(a, b)| a == b).count();
                let prompt_len = shared(&chosen).min(shared(&rejected));
                Ok(PreferenceItem {
                    chosen,
                    rejected,
                    prompt_len,
                })
            })
            .collect::<Result<_>>()?;
        Ok(PreferenceDataset { items })
    }
}

impl Dataset<PreferenceItem> for PreferenceDataset {
    fn get(&self, index: usize) -> Option<PreferenceItem> {
        self.items.get(index).cloned()
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Chosen and rejected sequences `[batch, len]` (both padded to the same length), and masks
/// `[batch, len]` that are 1 on response tokens and 0 on prompt and padding.
#[derive(Clone, Debug)]
pub struct PreferenceBatch<B: Backend> {
    pub chosen: Tensor<B, 2, Int>,
    pub rejected: Tensor<B, 2, Int>,
    pub chosen_mask: Tensor<B, 2>,
    pub rejected_mask: Tensor<B, 2>,
}

/// Pads with `pad_id` to the longest sequence of the batch (chosen and rejected alike),
/// optionally truncating to `max_length`.
#[derive(Clone, Debug)]
pub struct PreferenceBatcher {
    pub pad_id: u32,
    pub max_length: Option<usize>,
}

impl Default for PreferenceBatcher {
    fn default() -> Self {
        PreferenceBatcher {
            pad_id: llm_bpe::END_OF_TEXT_ID,
            max_length: None,
        }
    }
}

impl<B: Backend> Batcher<B, PreferenceItem, PreferenceBatch<B>> for PreferenceBatcher {
    fn batch(&self, items: Vec<PreferenceItem>, device: &B::Device) -> PreferenceBatch<B> {
        let longest = items
            .iter()
            .map(|i| i.chosen.len().max(i.rejected.len()))
            .max()
            .unwrap_or(1)
            .max(1);
        let len = self.max_length.map_or(longest, |m| m.min(longest)).max(1);
        let pad =
            |ids: &[u32], prompt_len: usize, ids_out: &mut Vec<i64>, mask_out: &mut Vec<f32>| {
                for p in 0..len {
                    ids_out.push(ids.get(p).map_or(self.pad_id as i64, |&t| t as i64));
                    mask_out.push(if p >= prompt_len && p < ids.len() {
                        1.0
                    } else {
                        0.0
                    });
                }
            };
        let (mut c, mut cm, mut r, mut rm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for item in &items {
            pad(&item.chosen, item.prompt_len, &mut c, &mut cm);
            pad(&item.rejected, item.prompt_len, &mut r, &mut rm);
        }
        let n = items.len();
        PreferenceBatch {
            chosen: int_tensor(c, n, len, device),
            rejected: int_tensor(r, n, len, device),
            chosen_mask: Tensor::from_data(TensorData::new(cm, [n, len]), device),
            rejected_mask: Tensor::from_data(TensorData::new(rm, [n, len]), device),
        }
    }
}
