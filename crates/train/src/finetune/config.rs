//! Fine-tuning recipes (`configs/finetune-*.json`): the task's data, what trains, LoRA, and
//! the loop's optimizer, schedule and run settings, with `--set key=value` on top.

use std::path::{Path, PathBuf};

use llm_model::LoraConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{
    load_recipe, GuardConfig, LoopConfig, OptimizerConfig, RunConfig, ScheduleConfig,
};
use crate::error::{Result, TrainError};
use crate::trainable::Trainable;

/// The task's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneData {
    /// The dataset file (`assets/data/SMSSpamCollection.tsv`, …).
    pub path: PathBuf,
    /// Seed of the class balancing and of the train / validation / test split.
    pub split_seed: u64,
}

impl Default for FinetuneData {
    fn default() -> Self {
        FinetuneData {
            path: PathBuf::new(),
            split_seed: 123,
        }
    }
}

/// Settings of the `instruct` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstructConfig {
    /// Leave the prompt's tokens out of the loss, so only the response is learned.
    pub mask_prompt: bool,
    /// New tokens per test response (greedy, stopping at `<|endoftext|>`).
    pub max_new_tokens: usize,
    /// Write responses for at most this many test examples (all of them when left out).
    pub test_examples: Option<usize>,
}

impl Default for InstructConfig {
    fn default() -> Self {
        InstructConfig {
            mask_prompt: false,
            max_new_tokens: 256,
            test_examples: None,
        }
    }
}

/// How a response's log-probability is taken over its tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogProb {
    /// The mean over the response tokens (the book's DPO notebook).
    #[default]
    Mean,
    /// The sum (the DPO paper, TRL).
    Sum,
}

/// Settings of the `dpo` task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    /// β: how strongly the policy is held to the reference.
    pub beta: f64,
    pub logprob: LogProb,
    /// The reference model (`--reference`); a frozen copy of the start model when left out.
    pub reference: Option<String>,
    /// Compute the reference's log-probabilities of the training pairs once, before the
    /// first step, instead of in every step (TRL's `precompute_ref_log_probs`).
    pub cache_reference: bool,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            logprob: LogProb::Mean,
            reference: None,
            cache_reference: false,
        }
    }
}

/// A fine-tuning recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// What the recipe is for and what to expect (free text).
    pub description: String,
    /// `classify`, `instruct` or `dpo`.
    pub task: String,
    /// The model to start from, as `--model` takes it (a checkpoint, a run directory, a
    /// Hugging Face directory or hub id).
    pub model: String,
    pub data: FinetuneData,
    /// Which GPT parameters train: `all`, `last:N` or `lora` (a task's head always trains).
    pub trainable: Trainable,
    /// LoRA adapters on the GPT's projections (`trainable` becomes `lora`).
    pub lora: Option<LoraConfig>,
    /// Dropout while fine-tuning (the base model's own setting when left out).
    pub dropout: Option<f64>,
    /// Train this many passes over the training split: sets `schedule.max_steps`, evaluates
    /// once per epoch (`run.eval_every`) and checkpoints at least as often.
    pub epochs: Option<usize>,
    pub instruct: InstructConfig,
    pub dpo: DpoConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub run: RunConfig,
    pub guard: GuardConfig,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            description: String::new(),
            task: "classify".into(),
            model: String::new(),
            data: FinetuneData::default(),
            trainable: Trainable::Last(1),
            lora: None,
            dropout: None,
            epochs: None,
            instruct: InstructConfig::default(),
            dpo: DpoConfig::default(),
            optimizer: OptimizerConfig {
                lr: 5e-5,
                beta2: 0.999,
                ..Default::default()
            },
            schedule: ScheduleConfig {
                warmup_steps: 0,
                min_lr: 5e-5,
                ..Default::default()
            },
            run: RunConfig::default(),
            guard: GuardConfig::default(),
        }
    }
}

/// The tasks `finetune` knows.
pub const TASKS: [&str; 3] = ["classify", "instruct", "dpo"];

impl FinetuneConfig {
    /// Reads a recipe and applies `overrides`; errors name the key (and the `--set` or the
    /// file that gave it).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let config: FinetuneConfig = load_recipe(path, overrides, Self::schema())?;
        config
            .validate()
            .map_err(|e| e.with_origin(path, overrides))?;
        Ok(config)
    }

    fn schema() -> Value {
        let mut v = serde_json::to_value(FinetuneConfig::default()).expect("defaults serialise");
        v["lora"] = serde_json::to_value(LoraConfig::new(8, Some(16.0))).expect("serialises");
        v["lora"]["alpha"] = Value::Null;
        v["dpo"]["reference"] = Value::String(String::new());
        v
    }

    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if !TASKS.contains(&self.task.as_str()) {
            return Err(TrainError::key(
                "task",
                format!("unknown task {:?} (tasks: {})", self.task, TASKS.join(", ")),
            ));
        }
        if self.model.is_empty() {
            return Err(TrainError::key(
                "model",
                "give the model to start from (--model)",
            ));
        }
        if self.data.path.as_os_str().is_empty() {
            return Err(TrainError::key("data.path", "give the dataset file"));
        }
        if let Some(lora) = &self.lora {
            lora.validate()
                .map_err(|e| TrainError::key("lora", e.to_string()))?;
        }
        if let Some(p) = self.dropout.filter(|p| !(0.0..1.0).contains(p)) {
            return Err(TrainError::key(
                "dropout",
                format!("must be in [0, 1), got {p}"),
            ));
        }
        if !(self.dpo.beta.is_finite() && self.dpo.beta > 0.0) {
            return Err(TrainError::key("dpo.beta", "must be a positive number"));
        }
        if self.trainable == Trainable::Lora && self.lora.is_none() {
            return Err(TrainError::key(
                "trainable",
                "\"lora\" needs a `lora` section (or --lora RANK[,ALPHA]): without adapters nothing would train",
            ));
        }
        if self.epochs == Some(0) {
            return Err(TrainError::key(
                "epochs",
                "must be at least 1 (or left out)",
            ));
        }
        // `max_steps` may be 0 here: that only evaluates the starting model.
        let mut settings = self.loop_config(1);
        settings.schedule.max_steps = settings.schedule.max_steps.max(1);
        settings.validate()
    }

    /// What trains: `lora` whenever adapters are configured.
    pub fn trainable(&self) -> Trainable {
        match self.lora {
            Some(_) => Trainable::Lora,
            None => self.trainable,
        }
    }

    /// The loop's settings, with `epochs` turned into `epochs × steps_per_epoch` steps,
    /// an evaluation at the end of every epoch, and a checkpoint at least that often.
    pub fn loop_config(&self, steps_per_epoch: usize) -> LoopConfig {
        let mut c = LoopConfig {
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            run: self.run.clone(),
            guard: self.guard.clone(),
        };
        if let Some(epochs) = self.epochs {
            c.schedule.max_steps = epochs * steps_per_epoch;
            c.run.eval_every = steps_per_epoch;
            c.run.checkpoint_every = c.run.checkpoint_every.min(steps_per_epoch);
        }
        c
    }
}
