//! Pre-training as a [`Task`]: next-token prediction on a token stream, from a fresh GPT.
//!
//! [`train`] and [`train_on`] check the recipe, the tokenizer and the input files before
//! anything is written, then hand a [`Pretrain`] task to the one loop
//! ([`train_task`](crate::train_task)).

use burn::tensor::Tensor;
use llm_data::{BatchOrder, NextTokenBatch, ShardSet, TokenBatches};
use llm_model::mc::McItem;
use llm_model::{lm_training_loss, Checkpoint, Gpt, Gpt2Config, KernelAutodiff};
use serde_json::Value;

use crate::config::{ModelConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::parallel;
use crate::run::RunDir;
use crate::task::{Evaluation, Inner, Objective, Task};
use crate::trainer::{train_task, Summary, TrainOptions};

mod data;
mod eval;

use data::{Data, DataSource, Plan};

/// A GPT learns from next-token batches with the cross-entropy loss (plus the weighted
/// load-balancing loss of a mixture of experts).
impl<B: KernelAutodiff> Objective<B> for Gpt<B> {
    type Batch = NextTokenBatch<B>;

    fn loss(&self, batch: NextTokenBatch<B>) -> Tensor<B, 1> {
        lm_training_loss(self, batch.inputs, batch.targets) // [1]
    }
}

/// Pre-training: the recipe, its data, and the position in the stream of batches.
pub struct Pretrain {
    config: TrainConfig,
    plan: Plan,
    source: Option<DataSource>,
    data: Option<Data>,
    batches: Option<TokenBatches>,
    /// `run.mc_eval_file`'s items, scored at each evaluation (none: not scored).
    mc_items: Vec<McItem>,
}

/// Trains (or resumes) a GPT as `config` says, in `options.run_dir`, on `device` and, with
/// `run.devices` > 1, the devices after it (data-parallel).
pub fn train<B: KernelAutodiff>(
    config: TrainConfig,
    options: TrainOptions,
    device: B::Device,
) -> Result<Summary> {
    config.validate()?;
    let devices = parallel::devices::<B>(&device, config.run.devices)?;
    train_on::<B>(config, options, devices)
}

/// [`train`] on the given devices, one model replica each (data-parallel when there are
/// several; `run.devices` is not consulted). Devices may repeat.
///
/// Everything that can be checked is checked before the run directory is touched; if the
/// run cannot start, a directory this call created is removed again.
pub fn train_on<B: KernelAutodiff>(
    config: TrainConfig,
    options: TrainOptions,
    devices: Vec<B::Device>,
) -> Result<Summary> {
    let task = Pretrain::new(config)?;
    let settings = task.config.loop_config();
    train_task::<B, Pretrain>(task, settings, options, devices)
}

impl Pretrain {
    /// Checks the recipe, opens the tokenizer and finds the input files (nothing is
    /// written yet).
    pub fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let source = DataSource::open(&config)?;
        let plan = Plan::new(&config, source.tokenizer.vocab_size())?;
        let mc_items = eval::mc_items(&config, &source.tokenizer, &plan.model)?;
        Ok(Pretrain {
            config,
            plan,
            source: Some(source),
            data: None,
            batches: None,
            mc_items,
        })
    }

    fn data(&self) -> &Data {
        self.data.as_ref().expect("prepare runs first")
    }

    fn batches(&mut self) -> &mut TokenBatches {
        self.batches.as_mut().expect("prepare runs first")
    }

    fn fresh_batches(&self, train_set: ShardSet) -> Result<TokenBatches> {
        let (r, t) = (&self.config.run, self.plan.seq_len);
        Ok(match self.config.data.batch_order {
            BatchOrder::Random => TokenBatches::random(train_set, r.batch_size, t, r.seed)?,
            BatchOrder::Sequential => TokenBatches::sequential(train_set, r.batch_size, t, r.seed)?,
        })
    }

    fn eval_loss<B: KernelAutodiff>(
        &self,
        model: &Inner<B, Gpt<B>>,
        split: &str,
        batches: usize,
        device: &B::Device,
    ) -> Result<Option<eval::SplitLoss>> {
        let (bs, t) = (self.config.run.batch_size, self.plan.seq_len);
        eval::evaluate(model, &self.data().dir, split, batches, bs, t, device)
    }
}

impl<B: KernelAutodiff> Task<B> for Pretrain {
    type Model = Gpt<B>;

    fn name(&self) -> &'static str {
        "pretrain"
    }

    fn model_config(&self) -> &Gpt2Config {
        &self.plan.model
    }

    fn tokenizer_name(&self) -> &str {
        &self.data().tokenizer_name
    }

    /// The recipe, with the model spelled out field by field.
    fn recipe(&self) -> Value {
        let mut resolved = self.config.clone();
        resolved.model = ModelConfig::spelled_out(&self.plan.model);
        serde_json::to_value(resolved).expect("config serialises")
    }

    fn describe(&self) -> String {
        let m = &self.plan.model;
        format!(
            "{} parameters ({} layers × {} wide, context {}); rows of {} tokens",
            m.num_params(),
            m.n_layer,
            m.n_embd,
            m.n_positions,
            self.plan.seq_len
        )
    }

    fn prepare(&mut self, run: &RunDir) -> Result<Vec<String>> {
        let source = self.source.take().expect("prepare runs once");
        let (data, said) = source.prepare(&self.config, run)?;
        self.batches = Some(self.fresh_batches(ShardSet::open(&data.dir, "train")?)?);
        self.data = Some(data);
        Ok(said)
    }

    fn init_model(&mut self, device: &B::Device) -> Result<Gpt<B>> {
        Ok(self.plan.model.init(device)?)
    }

    fn load_model(&self, ckpt: &Checkpoint, device: &B::Device) -> Result<Gpt<B>> {
        Ok(ckpt.model(device)?)
    }

    fn save_model(&self, model: &Inner<B, Gpt<B>>) -> Result<Checkpoint> {
        Ok(Checkpoint::from_model(model)?)
    }

    fn tokens_per_batch(&self) -> usize {
        self.config.run.batch_size * self.plan.seq_len
    }

    fn next_batch(&mut self, device: &B::Device) -> Result<NextTokenBatch<B>> {
        Ok(self.batches().next_batch::<B>(device)?)
    }

    fn skip_batch(&mut self, _device: &B::Device) -> Result<()> {
        self.batches().skip_batch();
        Ok(())
    }

    fn position(&self) -> Value {
        let state = self.batches.as_ref().expect("prepare runs first").state();
        serde_json::to_value(state).expect("position serialises")
    }

    fn restore_position(&mut self, position: Value) -> Result<()> {
        let state: llm_data::BatchState = serde_json::from_value(position)
            .map_err(|e| TrainError::Checkpoint(format!("bad data position: {e}")))?;
        let (b, t) = (state.batch_size, state.seq_len);
        let (want_b, want_t) = (self.config.run.batch_size, self.plan.seq_len);
        if (b, t) != (want_b, want_t) {
            return Err(TrainError::Resume(format!(
                "the batch shape changed from {b}×{t} to {want_b}×{want_t}"
            )));
        }
        let train_set = ShardSet::open(&self.data().dir, "train")?;
        self.batches = Some(TokenBatches::restore(train_set, state)?);
        Ok(())
    }

    fn evaluate(
        &mut self,
        model: &Inner<B, Gpt<B>>,
        device: &B::Device,
    ) -> Result<Option<Evaluation>> {
        let n = self.config.run.eval_batches;
        let Some(val) = self.eval_loss::<B>(model, "val", n, device)? else {
            return Ok(None);
        };
        // A mixture of experts also logs its load-balancing loss (`val_router_aux_loss`).
        let mut metrics: std::collections::BTreeMap<String, f64> = val
            .router_aux
            .map(|a| ("val_router_aux_loss".to_string(), a))
            .into_iter()
            .collect();
        if !self.mc_items.is_empty() {
            let tok = &self.data().tokenizer;
            let rows = self.config.run.batch_size;
            let mc = eval::multiple_choice(model, tok, &self.mc_items, rows, device)?;
            metrics.insert("mc_acc".into(), mc.acc);
            metrics.insert("mc_acc_norm".into(), mc.acc_norm);
        }
        Ok(Some(Evaluation {
            loss: val.loss,
            metrics,
        }))
    }

    /// One validation batch, or a training batch when there is no validation data.
    fn probe_loss(&mut self, model: &Inner<B, Gpt<B>>, device: &B::Device) -> Result<Option<f64>> {
        match self.eval_loss::<B>(model, "val", 1, device)? {
            Some(v) => Ok(Some(v.loss)),
            None => Ok(self
                .eval_loss::<B>(model, "train", 1, device)?
                .map(|l| l.loss)),
        }
    }

    /// A sample from the run's prompt; weights that are not finite are an error first.
    fn sample(&mut self, model: &Inner<B, Gpt<B>>, device: &B::Device) -> Result<Option<String>> {
        model.check_finite()?;
        eval::sample(model, &self.data().tokenizer, &self.config, device).map(Some)
    }
}
