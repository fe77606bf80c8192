//! `instruct`: supervised instruction fine-tuning on Alpaca-style examples, as in chapter 7
//! of "Build a Large Language Model (From Scratch)".
//!
//! - **Data:** a JSON array of `{instruction, input, output}`, split 85 / 5 / 10 into
//!   train, validation and test with a seed.
//! - **Text:** the Alpaca prompt template ([`format_example`]), one `<|endoftext|>` after
//!   the response, padding with the end-of-text token (50256 for GPT-2) to the longest example of the batch; targets are −100
//!   at every padding position after the first, and, with `instruct.mask_prompt`, in the
//!   prompt too.
//! - **Length rule:** an example longer than the model's context keeps its first
//!   `n_positions` tokens (the end of a long response, and its end token, are cut); the
//!   cut ones are counted.
//! - **At the end:** a greedy response to every test prompt, written to
//!   `test-responses.jsonl` and scored against the reference with token F1 and ROUGE-L.
//! - The checkpoint records the prompt template (`prompt_template: "alpaca"`).

use std::collections::BTreeMap;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::ElementConversion;
use llm_bpe::Tokenizer;
use llm_data::instruct::{
    format_input, load_instructions, split_instructions, InstructionBatcher, InstructionDataset,
    InstructionExample, InstructionItem, PROMPT_TEMPLATE, RESPONSE_HEADER,
};
use llm_data::NextTokenBatch;
use llm_model::{
    generate, lm_cross_entropy, Checkpoint, GenerateConfig, Gpt, Gpt2Config, KernelAutodiff,
};
use serde_json::{json, Value};

use super::config::FinetuneConfig;
use super::epochs::Epochs;
use super::score::{rouge_l, token_f1};
use super::Saving;
use crate::error::{Result, TrainError};
use crate::run::RunDir;
use crate::task::{Evaluation, Inner, Task};

/// The responses to the test prompts, in the run directory.
pub const TEST_RESPONSES: &str = "test-responses.jsonl";

/// The instruction task: its splits, the base model and the batch order.
pub struct Instruct<B: KernelAutodiff> {
    recipe: FinetuneConfig,
    base: Option<Gpt<B>>,
    base_config: Gpt2Config,
    tokenizer: Tokenizer,
    tokenizer_name: String,
    /// Train, validation and test examples, and their tokens.
    examples: [Vec<InstructionExample>; 3],
    splits: [InstructionDataset; 3],
    batcher: InstructionBatcher,
    /// Examples cut to the context, over all splits.
    truncated: usize,
    /// Training and validation examples left out because, with the prompt masked, the
    /// prompt fills the context and no target is left.
    no_target: usize,
    longest: usize,
    epochs: Epochs,
    saving: Saving,
}

/// With the prompt masked, a row's first target is the token after the prompt, so an
/// example whose prompt is longer than the context has none: it is left out of the
/// training and validation splits (the test split still gets a response) and counted.
fn drop_untargeted(
    splits: &mut [InstructionDataset; 3],
    n_positions: usize,
    path: &std::path::Path,
) -> Result<usize> {
    let dropped: usize = splits[..2]
        .iter_mut()
        .map(|split| split.retain(|item| item.prompt_len <= n_positions))
        .sum();
    if splits[0].len() == 0 {
        return Err(TrainError::key(
            "instruct.mask_prompt",
            format!(
                "every training prompt in {} is longer than the base's {n_positions}-token \
                 context, so no target is left; use a base with a longer context or \
                 instruct.mask_prompt = false",
                path.display()
            ),
        ));
    }
    Ok(dropped)
}

/// Checks every example: an empty instruction or response is an error naming the entry.
fn check_examples(path: &std::path::Path, examples: &[InstructionExample]) -> Result<()> {
    for (i, e) in examples.iter().enumerate() {
        for (field, text) in [("instruction", &e.instruction), ("output", &e.output)] {
            if text.trim().is_empty() {
                return Err(TrainError::Config(format!(
                    "{}: entry {i} (0-based): field `{field}` is empty",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

impl<B: KernelAutodiff> Instruct<B> {
    /// Reads and splits the data for `base`.
    pub fn new(
        recipe: FinetuneConfig,
        base: Gpt<B>,
        tokenizer: &Tokenizer,
        tokenizer_name: &str,
    ) -> Result<Self> {
        let base_config = base.config().clone();
        let path = &recipe.data.path;
        let all = load_instructions(path)?;
        check_examples(path, &all)?;
        let (train, val, test) = split_instructions(&all, recipe.data.split_seed)?;
        let examples = [train, val, test];
        let n_positions = base_config.n_positions;
        let mut splits = Vec::new();
        let (mut truncated, mut longest) = (0, 0);
        for set in &examples {
            let data = InstructionDataset::new(set, tokenizer)
                .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
            for item in (0..data.len()).filter_map(|i| data.get(i)) {
                // A row's inputs are its ids (the appended end token is only a target).
                truncated += (item.ids.len() > n_positions) as usize;
                longest = longest.max(item.ids.len().min(n_positions));
            }
            splits.push(data);
        }
        let mut splits: [InstructionDataset; 3] = splits.try_into().expect("three splits");
        let no_target = match recipe.instruct.mask_prompt {
            true => drop_untargeted(&mut splits, n_positions, path)?,
            false => 0,
        };
        if splits[0].len() < recipe.run.batch_size {
            return Err(TrainError::key(
                "run.batch_size",
                format!(
                    "{} is more than the {} training examples in {}",
                    recipe.run.batch_size,
                    splits[0].len(),
                    path.display()
                ),
            ));
        }
        let epochs = Epochs::new(splits[0].len(), recipe.run.batch_size, recipe.run.seed);
        let saving = Saving::new(&recipe, &base);
        let batcher = InstructionBatcher {
            pad_id: super::end_of_text(tokenizer)?,
            max_length: Some(n_positions),
            mask_prompt: recipe.instruct.mask_prompt,
        };
        Ok(Instruct {
            saving,
            recipe,
            base: Some(base),
            base_config,
            tokenizer: tokenizer.clone(),
            tokenizer_name: tokenizer_name.to_string(),
            examples,
            splits,
            batcher,
            truncated,
            no_target,
            longest,
            epochs,
        })
    }

    /// Whole batches in one pass over the training split.
    pub fn batches_per_epoch(&self) -> usize {
        self.epochs.batches_per_epoch()
    }

    fn trainable(&self, model: Gpt<B>) -> Gpt<B> {
        self.recipe
            .trainable()
            .apply(model, self.base_config.n_layer)
    }

    fn batch<BB: Backend>(
        &self,
        items: Vec<InstructionItem>,
        device: &BB::Device,
    ) -> NextTokenBatch<BB> {
        let b = self.batcher.batch(items, device);
        NextTokenBatch {
            inputs: b.inputs,
            targets: b.targets,
        }
    }

    /// Mean loss over the first `max_batches` batches of a split (all when `None`).
    fn split_loss(
        &self,
        model: &Gpt<B::InnerBackend>,
        split: usize,
        max_batches: Option<usize>,
        device: &B::Device,
    ) -> Option<f64> {
        let set = &self.splits[split];
        let items: Vec<InstructionItem> = (0..set.len()).filter_map(|i| set.get(i)).collect();
        let batches: Vec<&[InstructionItem]> = items
            .chunks(self.recipe.run.batch_size.max(1))
            .take(max_batches.unwrap_or(usize::MAX))
            .collect();
        if batches.is_empty() {
            return None;
        }
        let total: f64 = batches
            .iter()
            .map(|chunk| {
                let b = self.batch::<B::InnerBackend>(chunk.to_vec(), device);
                let loss: f64 = lm_cross_entropy(model, b.inputs, b.targets)
                    .into_scalar()
                    .elem();
                loss
            })
            .sum();
        Some(total / batches.len() as f64)
    }

    /// The model's greedy response to an example's prompt.
    fn respond(
        &self,
        model: &Gpt<B::InnerBackend>,
        example: &InstructionExample,
        device: &B::Device,
    ) -> Result<String> {
        let prompt = format!("{}{RESPONSE_HEADER}", format_input(example));
        let ids = self.tokenizer.encode_ordinary(&prompt);
        let eot = self.batcher.pad_id; // the end of text, checked at start-up
        let config = GenerateConfig {
            max_new_tokens: self.recipe.instruct.max_new_tokens,
            temperature: 0.0,
            top_k: None,
            seed: self.recipe.run.seed,
            stop_token: Some(eot),
        };
        let new = generate(model, &ids, &config, device, |_| {})?;
        let vocab = self.tokenizer.vocab_size() as u32;
        let kept: Vec<u32> = new.into_iter().filter(|&t| t != eot && t < vocab).collect();
        Ok(self.tokenizer.decode(&kept)?.trim().to_string())
    }
}

impl<B: KernelAutodiff> Task<B> for Instruct<B> {
    type Model = Gpt<B>;

    fn name(&self) -> &'static str {
        "instruct"
    }

    fn model_config(&self) -> &Gpt2Config {
        &self.base_config
    }

    fn tokenizer_name(&self) -> &str {
        &self.tokenizer_name
    }

    fn recipe(&self) -> Value {
        serde_json::to_value(&self.recipe).expect("recipe serialises")
    }

    fn describe(&self) -> String {
        let [train, val, test] = &self.splits;
        format!(
            "instruction fine-tuning: {} train, {} val, {} test examples, up to {} tokens ({} cut to the context){}; trains {}",
            train.len(),
            val.len(),
            test.len(),
            self.longest,
            self.truncated,
            match self.recipe.instruct.mask_prompt {
                true => format!(", prompt masked ({} left out: prompt longer than the context)", self.no_target),
                false => String::new(),
            },
            self.recipe.trainable()
        )
    }

    fn init_model(&mut self, device: &B::Device) -> Result<Gpt<B>> {
        let base = self.base.take().expect("the base model is used once");
        let gpt = self.recipe.start_from(base, device)?;
        Ok(self.trainable(gpt))
    }

    fn load_model(&self, ckpt: &Checkpoint, device: &B::Device) -> Result<Gpt<B>> {
        let gpt = self
            .saving
            .load(ckpt, self.base.as_ref(), &self.base_config, device)?;
        let gpt = self.recipe.with_dropout(gpt);
        Ok(self.trainable(gpt))
    }

    /// The GPT (or, with LoRA, its adapters) and the prompt template it learned.
    fn save_model(&self, model: &Gpt<B::InnerBackend>) -> Result<Checkpoint> {
        let mut ckpt = self.saving.save(model)?;
        ckpt.metadata["prompt_template"] = json!(PROMPT_TEMPLATE);
        Ok(ckpt)
    }

    /// An upper bound: `batch_size` rows of the longest training example.
    fn tokens_per_batch(&self) -> usize {
        self.recipe.run.batch_size * self.longest
    }

    fn next_batch(&mut self, device: &B::Device) -> Result<NextTokenBatch<B>> {
        let items = self
            .epochs
            .next_batch()
            .iter()
            .filter_map(|&i| self.splits[0].get(i))
            .collect();
        Ok(self.batch::<B>(items, device))
    }

    fn position(&self) -> Value {
        self.epochs.position()
    }

    fn restore_position(&mut self, position: Value) -> Result<()> {
        self.epochs.restore(position)
    }

    fn evaluate(
        &mut self,
        model: &Inner<B, Gpt<B>>,
        device: &B::Device,
    ) -> Result<Option<Evaluation>> {
        let Some(loss) = self.split_loss(model, 1, None, device) else {
            return Ok(None);
        };
        let mut metrics = BTreeMap::new();
        let batches = Some(self.recipe.run.eval_batches.max(1));
        if let Some(train) = self.split_loss(model, 0, batches, device) {
            metrics.insert("train_loss".into(), train);
        }
        Ok(Some(Evaluation { loss, metrics }))
    }

    fn probe_loss(&mut self, model: &Inner<B, Gpt<B>>, device: &B::Device) -> Result<Option<f64>> {
        Ok(self.split_loss(model, 1, Some(1), device))
    }

    /// The response to the first validation prompt.
    fn sample(&mut self, model: &Inner<B, Gpt<B>>, device: &B::Device) -> Result<Option<String>> {
        let Some(example) = self.examples[1].first() else {
            return Ok(None);
        };
        let response = self.respond(model, example, device)?;
        Ok(Some(format!(
            "### Instruction:\n{}\n### Response:\n{response}",
            example.instruction
        )))
    }

    fn finish(
        &mut self,
        model: &Inner<B, Gpt<B>>,
        run: &RunDir,
        device: &B::Device,
    ) -> Result<BTreeMap<String, f64>> {
        let limit = self.recipe.instruct.test_examples.unwrap_or(usize::MAX);
        let (mut lines, mut f1, mut rouge) = (String::new(), 0.0, 0.0);
        let test: Vec<InstructionExample> = self.examples[2].iter().take(limit).cloned().collect();
        for e in &test {
            let response = self.respond(model, e, device)?;
            f1 += token_f1(&response, &e.output);
            rouge += rouge_l(&response, &e.output);
            let row = json!({
                "instruction": e.instruction,
                "input": e.input,
                "output": e.output,
                "model_response": response,
            });
            lines.push_str(&format!("{row}\n"));
        }
        let path = run.root().join(TEST_RESPONSES);
        llm_common::fs::atomic_write(&path, lines.as_bytes())
            .map_err(|e| TrainError::io(&path, e))?;
        let n = test.len().max(1) as f64;
        let mut metrics = BTreeMap::new();
        if let Some(v) = self.split_loss(model, 1, None, device) {
            metrics.insert("val_loss".into(), v);
        }
        metrics.insert("test_f1".into(), f1 / n);
        metrics.insert("test_rouge_l".into(), rouge / n);
        metrics.insert("truncated".into(), self.truncated as f64);
        metrics.insert("no_target".into(), self.no_target as f64);
        Ok(metrics)
    }
}
