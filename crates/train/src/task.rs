//! What a kind of training plugs into the one loop: [`Objective`] (a model and the loss of
//! its batches) and [`Task`] (the data, the checkpoints and the measures around it).
//!
//! The loop ([`train_task`](crate::train_task)) owns everything tasks share: accumulation,
//! clipping, the schedule, the optimizer, evaluation and checkpoint timing, the logs, the
//! progress bar, resume, Ctrl-C and divergence. Pre-training is one task
//! ([`Pretrain`](crate::Pretrain)); fine-tuning adds others without touching the loop.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use llm_model::KernelAutodiff;
use llm_model::{Checkpoint, Gpt2Config};
use serde_json::Value;

use crate::error::Result;
use crate::run::RunDir;

/// A trainable model and the loss of one of its batches.
pub trait Objective<B: KernelAutodiff>: AutodiffModule<B> + Send + 'static {
    /// One micro-batch, already on the model's device.
    type Batch: Send;
    /// The mean loss of `batch`, `[1]`, with the autodiff graph.
    fn loss(&self, batch: Self::Batch) -> Tensor<B, 1>;
}

/// The model without autodiff (what evaluation and checkpoints see).
pub type Inner<B, M> = <M as AutodiffModule<B>>::InnerModule;

/// A validation pass: the loss the loop watches, and the task's other measures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// `val_loss`: divergence checks and `best.ckpt` follow it.
    pub loss: f64,
    /// Named measures (`val_accuracy`, `train_accuracy`, …), logged with the loss.
    pub metrics: BTreeMap<String, f64>,
}

/// One kind of training: what it learns from, how it measures, how it saves.
pub trait Task<B: KernelAutodiff> {
    type Model: Objective<B>;

    /// `pretrain`, `classify`, …: recorded in every checkpoint, so that a run resumes only
    /// as the task it was.
    fn name(&self) -> &'static str;
    /// The base model's shape (the one a resumed checkpoint must have).
    fn model_config(&self) -> &Gpt2Config;
    /// The tokenizer, as `--tokenizer` takes it.
    fn tokenizer_name(&self) -> &str;
    /// The recipe, stored in checkpoints (`train_config`) and the run's `config.json`.
    fn recipe(&self) -> Value;
    /// A line about the model and the data, printed before the first step.
    fn describe(&self) -> String;

    /// Writes what the task needs into the run directory (prepared data), before the model
    /// is built. Runs once the directory is locked.
    fn prepare(&mut self, _run: &RunDir) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The model of step 0 (the backend RNG has just been seeded with `run.seed`).
    fn init_model(&mut self, device: &B::Device) -> Result<Self::Model>;
    /// The model a checkpoint of this task holds.
    fn load_model(&self, ckpt: &Checkpoint, device: &B::Device) -> Result<Self::Model>;
    /// A checkpoint of the model (its weights; the loop adds the optimizer and run state).
    fn save_model(&self, model: &Inner<B, Self::Model>) -> Result<Checkpoint>;

    /// Tokens in one micro-batch, for throughput and `run.tokens_per_step`.
    fn tokens_per_batch(&self) -> usize;
    /// The next training micro-batch, in a fixed order that depends only on the seed.
    fn next_batch(&mut self, device: &B::Device) -> Result<<Self::Model as Objective<B>>::Batch>;
    /// Moves past the next training micro-batch, which another node trains on. The
    /// default makes the batch and drops it; a task whose stream can skip without reading
    /// overrides it.
    fn skip_batch(&mut self, device: &B::Device) -> Result<()> {
        self.next_batch(device).map(drop)
    }
    /// Where the stream of training batches is, for the checkpoint.
    fn position(&self) -> Value;
    /// Continues the stream from a saved position; an error if it does not fit this recipe.
    fn restore_position(&mut self, position: Value) -> Result<()>;

    /// Validation loss and measures now; `None` if there is no validation data.
    fn evaluate(
        &mut self,
        model: &Inner<B, Self::Model>,
        device: &B::Device,
    ) -> Result<Option<Evaluation>>;
    /// The loss on one held-out batch (a checkpoint is only written if it is finite).
    fn probe_loss(
        &mut self,
        model: &Inner<B, Self::Model>,
        device: &B::Device,
    ) -> Result<Option<f64>>;
    /// A generated sample for `samples.txt`, if the task makes them.
    fn sample(
        &mut self,
        _model: &Inner<B, Self::Model>,
        _device: &B::Device,
    ) -> Result<Option<String>> {
        Ok(None)
    }
    /// The final measures once training ends (`test_accuracy`, …), with anything the task
    /// writes into the run directory.
    fn finish(
        &mut self,
        _model: &Inner<B, Self::Model>,
        _run: &RunDir,
        _device: &B::Device,
    ) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
}
