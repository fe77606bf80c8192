//! # llm-train: the training loop, pre-training and fine-tuning
//!
//! One training loop ([`train_task`]), generic over `B: KernelAutodiff` and over the
//! [`Task`] it runs: pre-training ([`Pretrain`], through [`train()`]) and the fine-tuning
//! tasks of [`finetune`] (classification, instruction SFT, DPO, each optionally with LoRA).
//! A task supplies its batches, its loss ([`Objective`]), its measures ([`Evaluation`]),
//! its checkpoints and its resumable data position; [`Trainable`] picks the parameters that
//! train. What the loop gives every task:
//!
//! - [`TrainConfig`]: a pre-training recipe (model, data, optimizer, schedule, run settings) from
//!   `configs/*.json` with `--set key=value` overrides; unknown keys are errors naming the
//!   key.
//! - [`train()`] (and [`train_on`] with explicit devices): the loop. AdamW with betas
//!   (0.9, 0.95), eps 1e-8 and weight decay on 2-D weights and embeddings only
//!   ([`GptOptimizer`]); linear warmup then cosine decay
//!   ([`learning_rate`]); global-norm gradient clipping; gradient accumulation to a token
//!   budget per step; periodic evaluation (val loss, perplexity) and samples on
//!   `model.valid()`; NaN detection; a stop flag for Ctrl-C; data-parallel training over
//!   `run.devices` devices with Burn's collective all-reduce ([`devices`]), and across
//!   several processes or machines ([`Cluster`], Burn's global collective).
//! - Faults: a non-finite loss, gradient norm, validation loss or weight stops the run
//!   before anything is saved ([`TrainError::Diverged`]), and every checkpoint is checked
//!   to be sound before it is written; an optional spike guard ([`GuardConfig`], llm.c's
//!   outlier detector) skips or stops on loss and gradient-norm outliers.
//! - Experiment tracking in `runs/<name>/` ([`RunDir`]): the resolved config,
//!   `metrics.jsonl`, TensorBoard event files ([`tensorboard`]), samples, checkpoints.
//! - Checkpoints: model, optimizer state, step, data position and RNG, config and
//!   tokenizer, written atomically and checksummed; the last K and the best by val loss
//!   are kept; `resume` continues a run exactly (same per-step losses as an uninterrupted
//!   run) from the newest valid checkpoint, step or best, setting damaged ones aside.
//!
//! Why a custom loop and not Burn's `Learner`: step-based checkpoints and exact resume,
//! global-norm clipping and parameter groups are not available there in 0.21.

mod cluster;
mod config;
mod error;
pub mod finetune;
mod guard;
mod metrics;
mod optim;
mod parallel;
mod pretrain;
mod run;
mod schedule;
mod task;
pub mod tensorboard;
pub mod trainable;
mod trainer;

pub use cluster::Cluster;
pub use config::{
    apply_overrides, DataConfig, GuardAction, GuardConfig, LoopConfig, ModelConfig,
    OptimizerConfig, RunConfig, ScheduleConfig, TrainConfig,
};
pub use error::{Result, TrainError};
pub use guard::{Spike, SpikeGuard};
pub use metrics::{Metrics, MetricsLog};
pub use optim::{FusedAdamW, GptOptimizer};
pub use parallel::devices;
pub use pretrain::{train, train_on, Pretrain};
pub use run::RunDir;
pub use schedule::learning_rate;
pub use task::{Evaluation, Inner, Objective, Task};
pub use trainable::Trainable;
pub use trainer::{train_task, EvalHook, Outcome, Summary, TrainOptions};
