//! Instruction data in the Alpaca format, prompted and collated as in chapter 7 of
//! "LLMs from scratch".

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use llm_bpe::Tokenizer;
// The Alpaca format's strings live with the chat templates (`llm_bpe::chat`).
pub use llm_bpe::chat::{
    INPUT_HEADER, INSTRUCTION_HEADER, PREAMBLE, PROMPT_TEMPLATE, RESPONSE_HEADER,
};
use serde::Deserialize;

use crate::batcher::int_tensor;
use crate::error::{DataError, Result};
use crate::split::seeded_split;

/// Target value that the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One Alpaca-style example.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct InstructionExample {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
}

/// The prompt: the task preamble, `### Instruction:` and, if there is an input, `### Input:`.
pub fn format_input(e: &InstructionExample) -> String {
    let mut s = format!("{PREAMBLE}{INSTRUCTION_HEADER}{}", e.instruction);
    if !e.input.is_empty() {
        s.push_str(&format!("{INPUT_HEADER}{}", e.input));
    }
    s
}

/// Prompt, response header and response: the whole training text.
pub fn format_example(e: &InstructionExample) -> String {
    format!("{}{RESPONSE_HEADER}{}", format_input(e), e.output)
}

/// Reads a JSON array of examples; errors name the file (and the entry).
pub fn load_instructions(path: &Path) -> Result<Vec<InstructionExample>> {
    let text = crate::text::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| {
        DataError::file(
            path,
            format!("not a JSON array of {{instruction, input, output}}: {e}"),
        )
    })
}

/// The seeded 85 / 5 / 10 split into train, validation and test.
pub fn split_instructions(
    examples: &[InstructionExample],
    seed: u64,
) -> Result<(
    Vec<InstructionExample>,
    Vec<InstructionExample>,
    Vec<InstructionExample>,
)> {
    let mut parts = seeded_split(examples, &[0.85, 0.05, 0.10], seed)?.into_iter();
    let (train, val, test) = (parts.next(), parts.next(), parts.next());
    Ok((
        train.unwrap_or_default(),
        val.unwrap_or_default(),
        test.unwrap_or_default(),
    ))
}

/// A tokenized example: all its ids, and how many of them are prompt (with the header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstructionItem {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

/// Tokenized instruction examples.
#[derive(Clone, Debug)]
pub struct InstructionDataset {
    items: Vec<InstructionItem>,
}

impl InstructionDataset {
    /// Tokenizes every example. Special-token text in an example is an error naming it.
    pub fn new(examples: &[InstructionExample], tok: &Tokenizer) -> Result<Self> {
        let items = examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let ids = tok
                    .encode(&format_example(e))
                    .map_err(|err| DataError::Invalid(format!("instruction example {i}: {err}")))?;
                let prompt = tok.encode_ordinary(&format!("{}{RESPONSE_HEADER}", format_input(e)));
                // BPE can merge across the boundary; count the tokens the two share.
                let prompt_len = ids.iter().zip(&prompt).take_while(|(a, b)| a == b).count();
                Ok(InstructionItem { ids, prompt_len })
            })
            .collect::<Result<_>>()?;
        Ok(InstructionDataset { items })
    }

    /// Keeps the items for which `keep` is true; returns how many were left out.
    pub fn retain(&mut self, keep: impl FnMut(&InstructionItem) -> bool) -> usize {
        let before = self.items.len();
        self.items.retain(keep);
        before - self.items.len()
    }
}

impl Dataset<InstructionItem> for InstructionDataset {
    fn get(&self, index: usize) -> Option<InstructionItem> {
        self.items.get(index).cloned()
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Padded inputs and targets, `[batch, len]`; ignored targets are −100.
#[derive(Clone, Debug)]
pub struct InstructionBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
}

/// The walkthrough's `custom_collate_fn`.
#[derive(Clone, Debug)]
pub struct InstructionBatcher {
    /// Padding id, also the end-of-text marker appended to each example (50256 for GPT-2).
    pub pad_id: u32,
    /// Truncate inputs and targets to this many tokens.
    pub max_length: Option<usize>,
    /// Also ignore the targets inside the prompt, so the loss is on the response only.
    pub mask_prompt: bool,
}

impl Default for InstructionBatcher {
    fn default() -> Self {
        InstructionBatcher {
            pad_id: llm_bpe::END_OF_TEXT_ID,
            max_length: None,
            mask_prompt: false,
        }
    }
}

impl InstructionBatcher {
    /// Collates on the host: flat `(inputs, targets)` and the row length.
    ///
    /// Each example gets one end token, then padding to the longest in the batch. Inputs are
    /// all but the last token, targets all but the first; of the padding targets only the
    /// first (the end token to learn) counts, the rest are −100.
    pub fn collate(&self, items: &[InstructionItem]) -> (Vec<i64>, Vec<i64>, usize) {
        let longest = items.iter().map(|i| i.ids.len() + 1).max().unwrap_or(1);
        let len = self
            .max_length
            .map_or(longest - 1, |m| m.min(longest - 1))
            .max(1);
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for item in items {
            let mut padded: Vec<i64> = item.ids.iter().map(|&t| t as i64).collect();
            padded.resize(longest, self.pad_id as i64);
            let mut row_targets: Vec<i64> = padded[1..].to_vec();
            for t in row_targets.iter_mut().skip(item.ids.len()) {
                *t = IGNORE_INDEX;
            }
            if self.mask_prompt {
                let n = item.prompt_len.saturating_sub(1).min(row_targets.len());
                row_targets[..n].fill(IGNORE_INDEX);
            }
            inputs.extend_from_slice(&padded[..len]);
            targets.extend_from_slice(&row_targets[..len]);
        }
        (inputs, targets, len)
    }
}

impl<B: Backend> Batcher<B, InstructionItem, InstructionBatch<B>> for InstructionBatcher {
    fn batch(&self, items: Vec<InstructionItem>, device: &B::Device) -> InstructionBatch<B> {
        let (inputs, targets, len) = self.collate(&items);
        InstructionBatch {
            inputs: int_tensor(inputs, items.len(), len, device),
            targets: int_tensor(targets, items.len(), len, device),
        }
    }
}
