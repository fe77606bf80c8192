//! `classify`: spam detection on the SMS Spam Collection, as in chapter 6 of "Build a
//! Large Language Model (From Scratch)".
//!
//! - **Data:** `label<TAB>message` lines; every spam message and as many ham messages
//!   (seeded), split 70 / 10 / 20 into train, validation and test.
//! - **Length rule:** every message is padded with `<|endoftext|>` (50256; another tokenizer's end of sequence) to the longest
//!   training message; a message longer than that, or than the model's context, keeps its
//!   first tokens. The cut messages are counted and reported.
//! - **Model:** [`Classifier`]: the GPT and a 2-way linear head read at the last real token.
//! - **Batches:** seeded epochs of whole batches ([`Epochs`]).

use std::collections::BTreeMap;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{ElementConversion, Int, Tensor};
use llm_bpe::Tokenizer;
use llm_data::spam::{balanced, load_sms, split_spam, SpamBatch, SpamBatcher, SpamDataset};
use llm_model::{cross_entropy, Checkpoint, Classifier, ClassifierInfo, Gpt, Gpt2Config};
use llm_model::{KernelAutodiff, KernelBackend};
use serde_json::Value;

use super::config::FinetuneConfig;
use super::epochs::Epochs;
use super::Saving;
use crate::error::{Result, TrainError};
use crate::run::RunDir;
use crate::task::{Evaluation, Inner, Objective, Task};

/// Class names by index.
pub const LABELS: [&str; 2] = ["ham", "spam"];

/// A classifier learns from labelled batches with the cross-entropy loss.
impl<B: KernelAutodiff> Objective<B> for Classifier<B> {
    type Batch = SpamBatch<B>;

    fn loss(&self, batch: SpamBatch<B>) -> Tensor<B, 1> {
        class_loss(self.forward(batch.inputs, batch.last_index), batch.labels)
    }
}

/// Mean cross-entropy of class logits `[b, n]` against labels `[b]`.
fn class_loss<B: KernelBackend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    cross_entropy(logits.unsqueeze_dim::<3>(1), labels.unsqueeze_dim::<2>(1)) // [1]
}

/// The classification task: its splits, the base model and the batch order.
pub struct Classify<B: KernelAutodiff> {
    recipe: FinetuneConfig,
    base: Option<Gpt<B>>,
    base_config: Gpt2Config,
    tokenizer_name: String,
    splits: [SpamDataset; 3],
    max_length: usize,
    /// Messages cut to `max_length`, over all splits.
    truncated: usize,
    batcher: SpamBatcher,
    epochs: Epochs,
    saving: Saving,
}

impl<B: KernelAutodiff> Classify<B> {
    /// Reads and splits the data for `base` (checked against the tokenizer).
    pub fn new(
        recipe: FinetuneConfig,
        base: Gpt<B>,
        tokenizer: &Tokenizer,
        tokenizer_name: &str,
    ) -> Result<Self> {
        let base_config = base.config().clone();
        let all = load_sms(&recipe.data.path)?;
        let balanced = balanced(&all, recipe.data.split_seed);
        let (train, val, test) = split_spam(&balanced, recipe.data.split_seed)?;
        let encode = |set: &[_]| SpamDataset::new(set, tokenizer, None);
        let longest = encode(&train).longest();
        let max_length = longest.clamp(1, base_config.n_positions);
        let mut truncated = 0;
        let splits = [&train, &val, &test].map(|set| {
            let full = encode(set);
            truncated += (0..full.len())
                .filter(|&i| full.get(i).is_some_and(|x| x.ids.len() > max_length))
                .count();
            SpamDataset::new(set, tokenizer, Some(max_length))
        });
        if splits[0].len() < recipe.run.batch_size {
            return Err(TrainError::key(
                "run.batch_size",
                format!(
                    "{} is more than the {} training messages in {}",
                    recipe.run.batch_size,
                    splits[0].len(),
                    recipe.data.path.display()
                ),
            ));
        }
        let epochs = Epochs::new(splits[0].len(), recipe.run.batch_size, recipe.run.seed);
        let saving = Saving::new(&recipe, &base);
        Ok(Classify {
            saving,
            recipe,
            base: Some(base),
            base_config,
            tokenizer_name: tokenizer_name.to_string(),
            splits,
            max_length,
            truncated,
            batcher: SpamBatcher {
                pad_id: super::end_of_text(tokenizer)?,
                pad_to: Some(max_length),
            },
            epochs,
        })
    }

    /// Whole batches in one pass over the training split.
    pub fn batches_per_epoch(&self) -> usize {
        self.epochs.batches_per_epoch()
    }

    /// Messages cut to fit.
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            labels: LABELS.iter().map(|s| s.to_string()).collect(),
            max_length: self.max_length,
        }
    }

    fn trainable(&self, model: Classifier<B>) -> Classifier<B> {
        let rule = self.recipe.trainable();
        let gpt = rule.apply(model.gpt, self.base_config.n_layer);
        Classifier { gpt, ..model }
    }

    /// Loss and accuracy over a whole split.
    fn measure(
        &self,
        model: &Classifier<B::InnerBackend>,
        split: usize,
        device: &B::Device,
    ) -> (f64, f64) {
        let set = &self.splits[split];
        let (mut loss, mut correct) = (0.0, 0usize);
        let items: Vec<_> = (0..set.len()).filter_map(|i| set.get(i)).collect();
        for chunk in items.chunks(self.recipe.run.batch_size.max(1)) {
            let batch: SpamBatch<B::InnerBackend> = self.batcher.batch(chunk.to_vec(), device);
            let logits = model.forward(batch.inputs, batch.last_index); // [b, 2]
            let l: f64 = class_loss(logits.clone(), batch.labels.clone())
                .into_scalar()
                .elem();
            loss += l * chunk.len() as f64;
            let hits: i64 = logits
                .argmax(1)
                .squeeze_dim::<1>(1)
                .equal(batch.labels)
                .int()
                .sum()
                .into_scalar()
                .elem();
            correct += hits as usize;
        }
        let n = items.len().max(1) as f64;
        (loss / n, correct as f64 / n)
    }

    fn all_measures(
        &self,
        model: &Classifier<B::InnerBackend>,
        device: &B::Device,
    ) -> (f64, BTreeMap<String, f64>) {
        let mut metrics = BTreeMap::new();
        let mut val_loss = 0.0;
        for (i, name) in ["train", "val", "test"].iter().enumerate() {
            let (loss, acc) = self.measure(model, i, device);
            metrics.insert(format!("{name}_accuracy"), acc);
            if i == 1 {
                val_loss = loss;
            } else {
                metrics.insert(format!("{name}_loss"), loss);
            }
        }
        (val_loss, metrics)
    }
}

impl<B: KernelAutodiff> Task<B> for Classify<B> {
    type Model = Classifier<B>;

    fn name(&self) -> &'static str {
        "classify"
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
            "spam classification: {} train, {} val, {} test messages padded to {} tokens ({} cut to fit); trains {}",
            train.len(),
            val.len(),
            test.len(),
            self.max_length,
            self.truncated,
            self.recipe.trainable()
        )
    }

    fn init_model(&mut self, device: &B::Device) -> Result<Classifier<B>> {
        let base = self.base.take().expect("the base model is used once");
        let gpt = self.recipe.start_from(base, device)?;
        let model = Classifier::new(gpt, LABELS.len(), device);
        Ok(self.trainable(model))
    }

    fn load_model(&self, ckpt: &Checkpoint, device: &B::Device) -> Result<Classifier<B>> {
        let gpt = self
            .saving
            .load(ckpt, self.base.as_ref(), &self.base_config, device)?;
        let gpt = self.recipe.with_dropout(gpt);
        let (model, _) = Classifier::from_checkpoint(gpt, ckpt, device)?;
        Ok(self.trainable(model))
    }

    /// The GPT (or, with LoRA, its adapters), the head, and the labels.
    fn save_model(&self, model: &Inner<B, Classifier<B>>) -> Result<Checkpoint> {
        let mut ckpt = self.saving.save(&model.gpt)?;
        model.add_head(&mut ckpt, &self.info())?;
        Ok(ckpt)
    }

    fn tokens_per_batch(&self) -> usize {
        self.recipe.run.batch_size * self.max_length
    }

    fn next_batch(&mut self, device: &B::Device) -> Result<SpamBatch<B>> {
        let items = self
            .epochs
            .next_batch()
            .iter()
            .filter_map(|&i| self.splits[0].get(i))
            .collect();
        Ok(self.batcher.batch(items, device))
    }

    fn position(&self) -> Value {
        self.epochs.position()
    }

    fn restore_position(&mut self, position: Value) -> Result<()> {
        self.epochs.restore(position)
    }

    fn evaluate(
        &mut self,
        model: &Inner<B, Classifier<B>>,
        device: &B::Device,
    ) -> Result<Option<Evaluation>> {
        let (loss, metrics) = self.all_measures(model, device);
        Ok(Some(Evaluation { loss, metrics }))
    }

    fn probe_loss(
        &mut self,
        model: &Inner<B, Classifier<B>>,
        device: &B::Device,
    ) -> Result<Option<f64>> {
        Ok(Some(self.measure(model, 1, device).0))
    }

    fn finish(
        &mut self,
        model: &Inner<B, Classifier<B>>,
        _run: &RunDir,
        device: &B::Device,
    ) -> Result<BTreeMap<String, f64>> {
        let (val_loss, mut metrics) = self.all_measures(model, device);
        metrics.insert("val_loss".into(), val_loss);
        metrics.insert("truncated".into(), self.truncated as f64);
        Ok(metrics)
    }
}

/// The label and its probability for each text, from a classifier checkpoint's model.
pub fn predict<B: KernelBackend>(
    model: &Classifier<B>,
    info: &ClassifierInfo,
    tokenizer: &Tokenizer,
    texts: &[String],
    device: &B::Device,
) -> Result<Vec<(String, f64)>> {
    let examples: Vec<_> = texts
        .iter()
        .map(|t| llm_data::spam::SpamExample {
            label: 0,
            text: t.clone(),
        })
        .collect();
    let max_length = info.max_length.min(model.gpt.n_positions());
    let set = SpamDataset::new(&examples, tokenizer, Some(max_length));
    let items: Vec<_> = (0..set.len()).filter_map(|i| set.get(i)).collect();
    let batcher = SpamBatcher {
        pad_id: super::end_of_text(tokenizer)?,
        pad_to: Some(max_length),
    };
    let batch: SpamBatch<B> = batcher.batch(items, device);
    let probs = burn::tensor::activation::softmax(model.forward(batch.inputs, batch.last_index), 1);
    let [n, k] = probs.dims();
    let values: Vec<f32> = probs
        .into_data()
        .to_vec()
        .map_err(|e| TrainError::Config(format!("reading the probabilities: {e:?}")))?;
    Ok((0..n)
        .map(|i| {
            let row = &values[i * k..(i + 1) * k];
            let (best, p) =
                row.iter().enumerate().fold(
                    (0, f32::MIN),
                    |acc, (j, &p)| if p > acc.1 { (j, p) } else { acc },
                );
            let label = info
                .labels
                .get(best)
                .cloned()
                .unwrap_or_else(|| best.to_string());
            (label, p as f64)
        })
        .collect())
}
