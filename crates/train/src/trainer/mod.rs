//! The pre-training loop, generic over `B: AutodiffBackend`.
//!
//! [`train_on`] reads top to bottom like nanoGPT's `train.py`:
//! 1. **check** the recipe, the tokenizer and the input files before writing anything
//!    ([`DataSource::open`], [`Plan::new`]);
//! 2. **open** the run directory (locked, with what a crash left behind cleared) and prepare
//!    the data;
//! 3. **start or resume** ([`Trainer::start`]): a fresh model, or the newest valid checkpoint;
//! 4. **loop**: [`Trainer::train_step`] (micro-batches, forward and backward, judge, update),
//!    then [`Trainer::after_step`] (evaluate, log, sample, save);
//! 5. **finish** with a [`Summary`].
//!
//! Each step: `accum` micro-batches (forward, loss / accum, backward, accumulate), then the
//! learning rate from the schedule, global-norm clipping and AdamW in two parameter groups.
//! Evaluation and samples run on `model.valid()`: the inner backend, with no autodiff graph
//! (so memory does not grow) and no dropout. Checkpoints hold everything needed to continue
//! exactly: model, optimizer state, step, the data position and RNG, the spike guard's
//! window. Dropout masks come from the backend RNG, re-seeded from the step number before
//! every micro-batch, so a resumed run draws the same masks it would have drawn.
//!
//! **Divergence.** A non-finite loss or gradient norm stops the run before the update; a
//! non-finite validation loss stops it before anything is saved. Every checkpoint is checked
//! first (finite weights, and a finite loss on a validation batch), so the checkpoint that
//! the error names as the last good one is one that works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use llm_data::TokenBatches;
use llm_model::{Checkpoint, Gpt2Config, ModelError};

use crate::config::{GuardAction, TrainConfig};
use crate::error::{Result, TrainError};
use crate::guard::SpikeGuard;
use crate::metrics::{Metrics, MetricsLog};
use crate::parallel::{self, Replica, Work};
use crate::run::RunDir;
use crate::schedule::learning_rate;

mod eval;
mod setup;

use eval::{evaluate, sample};
use setup::{
    check_resumable, ensure_fresh, fresh_state, replicate, restore_state, write_resolved_config,
    Data, DataSource, Plan, RunState,
};

/// How to run: where, whether to resume, and how to be stopped.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Continue from the newest valid checkpoint in `run_dir` (from step 0 if there is none).
    /// Without it, a directory that holds a complete checkpoint is refused.
    pub resume: bool,
    /// Set (by a Ctrl-C handler) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Pause once this many steps are done, as Ctrl-C would: save a checkpoint and return
    /// [`Outcome::Interrupted`]. The schedule still runs to `max_steps`, so `--resume`
    /// continues exactly.
    pub stop_at_step: Option<usize>,
}

impl TrainOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        TrainOptions {
            run_dir: run_dir.into(),
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            stop_at_step: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `schedule.max_steps` reached.
    Finished,
    /// Stopped by the stop flag (Ctrl-C) after saving a checkpoint.
    Interrupted,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub outcome: Outcome,
    /// Optimizer steps done in all (including before a resume).
    pub steps: usize,
    /// The training loss of each step of this session, in order.
    pub losses: Vec<f64>,
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    /// Steps of this session whose update the spike guard dropped.
    pub skipped_steps: usize,
    pub seconds: f64,
    /// Training throughput of this session (evaluation and samples excluded).
    pub tokens_per_s: f64,
    pub model: Gpt2Config,
    pub last_checkpoint: Option<PathBuf>,
    pub run_dir: PathBuf,
}

pub(super) fn say(bar: &Option<ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.println(line),
        None => tracing::info!("{line}"),
    }
}

pub(super) fn warn(bar: &Option<ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.println(format!("warning: {line}")),
        None => tracing::warn!("{line}"),
    }
}

/// What one optimizer step did.
struct StepReport {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    seconds: f64,
    /// The spike guard dropped the update.
    skipped: bool,
}

/// What this session did (a resumed run's earlier sessions are not counted).
struct Session {
    start: Instant,
    losses: Vec<f64>,
    val_loss: Option<f64>,
    train_secs: f64,
    skipped: usize,
}

/// A run in progress.
struct Trainer<B: AutodiffBackend> {
    config: TrainConfig,
    options: TrainOptions,
    plan: Plan,
    run: RunDir,
    data: Data,
    devices: Vec<B::Device>,
    replicas: Vec<Replica<B>>,
    batches: TokenBatches,
    step: usize,
    best_val: Option<f64>,
    guard: SpikeGuard,
    last_checkpoint: Option<PathBuf>,
    log: MetricsLog,
    bar: Option<ProgressBar>,
    session: Session,
}

/// Trains (or resumes) a GPT as `config` says, in `options.run_dir`, on `device` and, with
/// `run.devices` > 1, the devices after it (data-parallel).
pub fn train<B: AutodiffBackend>(
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
pub fn train_on<B: AutodiffBackend>(
    config: TrainConfig,
    options: TrainOptions,
    devices: Vec<B::Device>,
) -> Result<Summary> {
    config.validate()?;
    if devices.is_empty() {
        return Err(TrainError::Config("no device to train on".into()));
    }
    let source = DataSource::open(&config)?;
    let plan = Plan::new(&config, source.tokenizer.vocab_size(), devices.len())?;
    let run = RunDir::open(&options.run_dir)?;
    let (root, created) = (run.root().to_path_buf(), run.created());
    match Trainer::<B>::start(config, options, plan, run, source, devices) {
        Ok(trainer) => trainer.run(),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir_all(&root);
            }
            Err(e)
        }
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Everything before the first step: the data, the model (fresh or resumed), the
    /// replicas, the resolved config and the logs.
    fn start(
        config: TrainConfig,
        options: TrainOptions,
        plan: Plan,
        run: RunDir,
        source: DataSource,
        devices: Vec<B::Device>,
    ) -> Result<Self> {
        let bar = options.progress.then(|| {
            ProgressBar::new(config.schedule.max_steps as u64).with_style(
                ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} eta {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            )
        });
        match options.resume {
            true => check_resumable(&run, &plan)?,
            false => ensure_fresh(&run, &bar)?,
        }
        let data = source.prepare(&config, &run, &bar)?;
        let device = &devices[0];
        let restored = match options.resume {
            true => restore_state::<B>(&config, &plan, &data, &run, device, &bar)?,
            false => None,
        };
        let state = match restored {
            Some(state) => state,
            None => fresh_state::<B>(&config, &plan, &data, device)?,
        };
        let replicas = replicate(state.model, state.optim, &config, &devices)?;
        parallel::join::<B>(&devices)?;
        // A resume past max_steps trains nothing: keep the config that the run was made with.
        if state.step < config.schedule.max_steps {
            write_resolved_config(&config, &plan.model, &run)?;
        }
        let resumed_at = state.checkpoint.is_some().then_some(state.step);
        let log = MetricsLog::open(&run, resumed_at)?;
        say(
            &bar,
            &format!(
                "{} parameters ({} layers × {} wide, context {}); {} tokens per step ({} × {} × {} micro-batches); {} steps on {}",
                plan.model.num_params(),
                plan.model.n_layer,
                plan.model.n_embd,
                plan.model.n_positions,
                plan.step_tokens,
                config.run.batch_size,
                plan.seq_len,
                plan.accum,
                config.schedule.max_steps,
                B::name(device)
            ),
        );
        if let Some(b) = &bar {
            b.set_position(state.step as u64);
        }
        Ok(Trainer {
            config,
            options,
            plan,
            run,
            data,
            devices,
            replicas,
            batches: state.batches,
            step: state.step,
            best_val: state.best_val,
            guard: state.guard,
            last_checkpoint: state.checkpoint,
            log,
            bar,
            session: Session {
                start: Instant::now(),
                losses: Vec::new(),
                val_loss: None,
                train_secs: 0.0,
                skipped: 0,
            },
        })
    }

    /// The training loop, then the summary.
    fn run(mut self) -> Result<Summary> {
        let max_steps = self.config.schedule.max_steps;
        if self.step >= max_steps {
            warn(
                &self.bar,
                &format!(
                    "the run is already at step {} and schedule.max_steps is {max_steps}: nothing to train (raise --max-steps to go on)",
                    self.step
                ),
            );
        }
        let mut outcome = Outcome::Finished;
        while self.step < max_steps {
            if self.pause_requested() {
                outcome = Outcome::Interrupted;
                break;
            }
            let report = self.train_step()?;
            self.after_step(&report)?;
            llm_common::failpoint::check(|| format!("after-step:{}", self.step));
        }
        if outcome == Outcome::Interrupted && self.step > 0 {
            let path = self.run.checkpoints().step_path(self.step);
            if self.last_checkpoint.as_ref() != Some(&path) {
                self.save_step(None)?;
            }
        }
        Ok(self.summary(outcome))
    }

    fn pause_requested(&self) -> bool {
        self.options.stop.load(Ordering::SeqCst)
            || self.options.stop_at_step.is_some_and(|s| self.step >= s)
    }

    fn lead(&self) -> &Replica<B> {
        &self.replicas[0]
    }

    /// One optimizer step: the step's micro-batches, forward and backward, then the
    /// update, unless the loss or the gradient norm is not finite (the run stops, nothing
    /// is updated) or the spike guard objects.
    fn train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let work = self.next_work()?;
        let lr = learning_rate(self.step, &self.config.optimizer, &self.config.schedule);
        let grads = parallel::gradients(&mut self.replicas, work, self.plan.accum)?;
        let (loss, grad_norm) = (grads.loss, grads.grad_norm);
        for (what, value) in [("the loss", loss), ("the gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(self.diverged(self.step + 1, format!("{what} is {value}")));
            }
        }
        let skipped = self.judge(loss, grad_norm)?;
        self.guard.record(&self.config.guard, loss, grad_norm);
        if !skipped {
            parallel::apply(&mut self.replicas, grads, lr)?;
        }
        self.step += 1;
        Ok(StepReport {
            loss,
            grad_norm,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            skipped,
        })
    }

    /// The step's micro-batches, in order from the one stream; micro-batch k runs on
    /// device k % n. Dropout seeds depend only on (seed, step, micro-batch).
    fn next_work(&mut self) -> Result<Vec<Work<B>>> {
        let (n, accum, seed) = (self.devices.len(), self.plan.accum, self.config.run.seed);
        let mut work: Vec<Work<B>> = (0..n).map(|_| Vec::new()).collect();
        for micro in 0..accum {
            let dropout_seed =
                seed ^ ((self.step * accum + micro) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let d = micro % n;
            work[d].push((
                dropout_seed,
                self.batches.next_batch::<B>(&self.devices[d])?,
            ));
        }
        Ok(work)
    }

    /// The spike guard's verdict on a step: `Ok(true)` to skip its update, an error to stop.
    fn judge(&self, loss: f64, grad_norm: f64) -> Result<bool> {
        let g = &self.config.guard;
        if g.action == GuardAction::Off {
            return Ok(false);
        }
        let Some(spike) = self.guard.check(g, loss, grad_norm) else {
            return Ok(false);
        };
        if g.action == GuardAction::Stop {
            return Err(TrainError::Spike {
                step: self.step + 1,
                what: spike.what,
                value: spike.value,
                z: spike.z,
                mean: spike.mean,
                window: g.window,
                checkpoint: self.last_checkpoint.clone(),
            });
        }
        warn(
            &self.bar,
            &format!(
                "step {}: {} {:.4} is {:.1} standard deviations above the mean of the last {} steps ({:.4}): update skipped",
                self.step + 1,
                spike.what,
                spike.value,
                spike.z,
                g.window,
                spike.mean
            ),
        );
        Ok(true)
    }

    /// What follows a step, ordered so that a kill at any point resumes cleanly: the
    /// validation loss, the metrics line and a sample come before the checkpoints that
    /// record this step (`best.ckpt` on a new best, then the step checkpoint), then the
    /// progress line.
    fn after_step(&mut self, report: &StepReport) -> Result<()> {
        self.session.losses.push(report.loss);
        self.session.train_secs += report.seconds;
        self.session.skipped += report.skipped as usize;
        let r = &self.config.run;
        let last = self.step == self.config.schedule.max_steps;
        let due = |n: usize| n > 0 && self.step.is_multiple_of(n);
        let (eval, log, sample, save) = (
            due(r.eval_every) || last,
            due(r.log_every) || last,
            due(r.sample_every) || last,
            due(r.checkpoint_every) || last,
        );
        let val = if eval { self.evaluate(report)? } else { None };
        if log || val.is_some() {
            self.log_metrics(report, val)?;
        }
        if sample {
            self.sample()?;
        }
        if let Some(v) = val.filter(|&v| self.best_val.is_none_or(|b| v < b)) {
            self.save_best(v)?;
        }
        if save {
            self.save_step(val)?;
        }
        self.progress(report);
        Ok(())
    }

    /// The validation loss now. A non-finite value stops the run before anything is saved.
    fn evaluate(&mut self, report: &StepReport) -> Result<Option<f64>> {
        let r = &self.config.run;
        let model = self.lead().model.valid();
        let Some(v) = evaluate(
            &model,
            &self.data.dir,
            "val",
            r.eval_batches,
            r.batch_size,
            self.plan.seq_len,
            &self.devices[0],
        )?
        else {
            return Ok(None);
        };
        if !v.is_finite() {
            return Err(self.diverged(self.step, format!("the validation loss is {v}")));
        }
        self.session.val_loss = Some(v);
        say(
            &self.bar,
            &format!(
                "step {}: train loss {:.4}, val loss {v:.4} (perplexity {:.1})",
                self.step,
                report.loss,
                v.exp()
            ),
        );
        Ok(Some(v))
    }

    fn log_metrics(&mut self, report: &StepReport, val: Option<f64>) -> Result<()> {
        self.log.log(&Metrics {
            step: self.step,
            loss: report.loss,
            val_loss: val,
            lr: report.lr,
            grad_norm: report.grad_norm,
            tokens_per_s: self.plan.step_tokens as f64 / report.seconds,
            elapsed: self.session.start.elapsed().as_secs_f64(),
            skipped: report.skipped,
        })
    }

    /// A sample from the run's prompt, into `samples.txt`. Weights or logits that are not
    /// finite stop the run as diverged.
    fn sample(&mut self) -> Result<()> {
        let model = self.lead().model.valid();
        model.check_finite().map_err(|e| self.model_error(e))?;
        let text =
            sample(&model, &self.data.tokenizer, &self.config, &self.devices[0]).map_err(|e| {
                match e {
                    TrainError::Model(ModelError::Input(m)) => {
                        self.diverged(self.step, format!("sampling failed: {m}"))
                    }
                    other => other,
                }
            })?;
        self.log.sample(self.step, &text)?;
        say(
            &self.bar,
            &format!("--- sample at step {} ---\n{text}\n---", self.step),
        );
        Ok(())
    }

    /// Saves `best.ckpt` for a new best validation loss `v`.
    fn save_best(&mut self, v: f64) -> Result<()> {
        self.best_val = Some(v);
        let path = self.run.checkpoints().best_path();
        self.save(&path, Some(v))?;
        self.last_checkpoint = Some(path);
        Ok(())
    }

    /// Saves the step checkpoint, then prunes old ones (only once the new one is in place).
    fn save_step(&mut self, val: Option<f64>) -> Result<()> {
        let path = self.run.checkpoints().step_path(self.step);
        self.save(&path, val)?;
        self.run.checkpoints().prune(self.config.run.keep_last)?;
        self.last_checkpoint = Some(path);
        Ok(())
    }

    /// Writes a checkpoint of the lead replica once it is known to be sound: its weights
    /// are finite (`Checkpoint::from_model` checks) and so is its loss on a validation
    /// batch (`val`, if just measured). Anything else stops the run as diverged.
    fn save(&self, path: &Path, val: Option<f64>) -> Result<()> {
        let lead = self.lead();
        let mut ckpt = Checkpoint::from_model(&lead.model, &self.plan.model)
            .map_err(|e| self.model_error(e))?;
        self.check_loss(val)?;
        let (decay, no_decay) = lead.optim.to_bytes()?;
        ckpt.set_section("optim.decay", decay);
        ckpt.set_section("optim.no_decay", no_decay);
        let state = RunState {
            step: self.step,
            tokenizer: self.data.tokenizer_name.clone(),
            batches: self.batches.state().clone(),
            best_val_loss: self.best_val,
            train_config: self.config.clone(),
            guard: self.guard.clone(),
        };
        ckpt.metadata = serde_json::to_value(&state).expect("state serialises");
        ckpt.save(path)?;
        Ok(())
    }

    /// The model's loss on a validation batch must be finite: `val` if just measured, else
    /// one batch now (a training batch when there is no validation data).
    fn check_loss(&self, val: Option<f64>) -> Result<()> {
        let probe = match val {
            Some(v) => Some(v),
            None => {
                let model = self.lead().model.valid();
                let (bs, t, dev) = (
                    self.config.run.batch_size,
                    self.plan.seq_len,
                    &self.devices[0],
                );
                match evaluate(&model, &self.data.dir, "val", 1, bs, t, dev)? {
                    Some(v) => Some(v),
                    None => evaluate(&model, &self.data.dir, "train", 1, bs, t, dev)?,
                }
            }
        };
        match probe {
            Some(v) if !v.is_finite() => {
                Err(self.diverged(self.step, format!("the loss on a validation batch is {v}")))
            }
            _ => Ok(()),
        }
    }

    /// A model error, with non-finite weights reported as the run diverging.
    fn model_error(&self, e: ModelError) -> TrainError {
        match e {
            ModelError::NonFinite { tensor, .. } => {
                self.diverged(self.step, format!("weight {tensor} holds NaN or infinity"))
            }
            other => other.into(),
        }
    }

    fn diverged(&self, step: usize, what: String) -> TrainError {
        TrainError::Diverged {
            step,
            what,
            checkpoint: self.last_checkpoint.clone(),
        }
    }

    fn progress(&self, report: &StepReport) {
        let (step, max_steps) = (self.step, self.config.schedule.max_steps);
        let tokens_per_s = self.plan.step_tokens as f64 / report.seconds;
        let (loss, lr) = (report.loss, report.lr);
        let print_every = (max_steps / 20).max(self.config.run.log_every);
        match &self.bar {
            Some(b) => {
                b.set_position(step as u64);
                b.set_message(format!("loss {loss:.3} lr {lr:.1e} {tokens_per_s:.0} tok/s"));
            }
            // No terminal: a log line about 20 times per run instead of a bar.
            None if step % print_every == 0 || step == max_steps => tracing::info!(
                "step {step}/{max_steps}: loss {loss:.4}, lr {lr:.2e}, grad norm {:.3}, {tokens_per_s:.0} tokens/s, {:.0} s",
                report.grad_norm,
                self.session.start.elapsed().as_secs_f64()
            ),
            None => {}
        }
    }

    fn summary(&self, outcome: Outcome) -> Summary {
        let s = &self.session;
        let tokens_per_s = if s.train_secs > 0.0 {
            (s.losses.len() * self.plan.step_tokens) as f64 / s.train_secs
        } else {
            0.0
        };
        Summary {
            outcome,
            steps: self.step,
            losses: s.losses.clone(),
            val_loss: s.val_loss,
            best_val_loss: self.best_val,
            skipped_steps: s.skipped,
            seconds: s.start.elapsed().as_secs_f64(),
            tokens_per_s,
            model: self.plan.model.clone(),
            last_checkpoint: self.last_checkpoint.clone(),
            run_dir: self.run.root().to_path_buf(),
        }
    }
}

impl<B: AutodiffBackend> Drop for Trainer<B> {
    /// Leaves the collective (data parallel) and clears the progress bar, however the run
    /// ended.
    fn drop(&mut self) {
        parallel::leave::<B>(self.devices.len());
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
