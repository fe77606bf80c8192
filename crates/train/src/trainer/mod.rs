//! The training loop, generic over `B: KernelAutodiff` and over the [`Task`]: pre-training
//! and every fine-tuning task run through this one loop.
//!
//! [`train_task`] reads top to bottom like nanoGPT's `train.py`:
//! 1. **check**: the task has checked its recipe, tokenizer and inputs before it gets here;
//! 2. **open** the run directory (locked, with what a crash left behind cleared) and let the
//!    task prepare its data ([`Task::prepare`]);
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
//!
//! **Several nodes** ([`Cluster`]): every node runs this loop on its share of each step's
//! micro-batches; node 0 alone evaluates, samples and writes checkpoints, into the run
//! directory. The other nodes keep their own logs and prepared data in `RUN_DIR/node-R/`
//! and resume from the run directory's checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use indicatif::{ProgressBar, ProgressStyle};
use llm_model::KernelAutodiff;
use llm_model::{Gpt2Config, ModelError};

use crate::cluster::Cluster;
use crate::config::{GuardAction, LoopConfig};
use crate::error::{Result, TrainError};
use crate::guard::SpikeGuard;
use crate::metrics::{Metrics, MetricsLog};
use crate::parallel::{self, Collective, Replica, Work};
use crate::run::RunDir;
use crate::schedule::learning_rate;
use crate::task::{Evaluation, Task};

mod setup;

use setup::{
    check_resumable, ensure_fresh, fresh_state, refuse_existing, replicate, restore_state,
    write_resolved_config, RunState,
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
    /// Called with the run directory after each evaluation's metrics are logged (the
    /// command line draws the run's plot there). An error is printed, not fatal.
    pub after_eval: Option<EvalHook>,
    /// This process's place among the run's nodes (one node by default).
    pub cluster: Cluster,
}

/// Something to do after each evaluation, given the run directory.
#[derive(Clone)]
pub struct EvalHook(Arc<EvalFn>);

type EvalFn = dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync;

impl EvalHook {
    pub fn new(
        f: impl Fn(&Path) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        EvalHook(Arc::new(f))
    }
}

impl std::fmt::Debug for EvalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvalHook")
    }
}

impl TrainOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        TrainOptions {
            run_dir: run_dir.into(),
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            stop_at_step: None,
            after_eval: None,
            cluster: Cluster::default(),
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
    /// The task's measures at the last evaluation (`val_accuracy`, …).
    pub val_metrics: BTreeMap<String, f64>,
    /// The task's final measures ([`Task::finish`]: `test_accuracy`, …), once it finished.
    pub final_metrics: BTreeMap<String, f64>,
    pub best_val_loss: Option<f64>,
    /// Steps of this session whose update the spike guard dropped.
    pub skipped_steps: usize,
    pub seconds: f64,
    /// Training throughput of this session (evaluation and samples excluded).
    pub tokens_per_s: f64,
    pub model: Gpt2Config,
    /// Parameters that train, and all of them.
    pub trainable_params: usize,
    pub total_params: usize,
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
    val: Option<Evaluation>,
    final_metrics: BTreeMap<String, f64>,
    train_secs: f64,
    skipped: usize,
}

/// A run in progress.
struct Trainer<B: KernelAutodiff, T: Task<B>> {
    config: LoopConfig,
    options: TrainOptions,
    task: T,
    run: RunDir,
    devices: Vec<B::Device>,
    replicas: Vec<Replica<B, T::Model>>,
    /// The all-reduce across devices and nodes (inactive with one of each).
    collective: Collective,
    /// Micro-batches per optimizer step, over all nodes (a multiple of the run's devices).
    accum: usize,
    step_tokens: usize,
    step: usize,
    best_val: Option<f64>,
    guard: SpikeGuard,
    last_checkpoint: Option<PathBuf>,
    log: MetricsLog,
    bar: Option<ProgressBar>,
    session: Session,
}

/// Runs `task` through the loop as `config` says, in `options.run_dir`, one model replica
/// per device (data-parallel when there are several; devices may repeat).
///
/// The task has checked its inputs already; if the run cannot start, a directory this
/// call created is removed again.
pub fn train_task<B: KernelAutodiff, T: Task<B>>(
    task: T,
    config: LoopConfig,
    options: TrainOptions,
    devices: Vec<B::Device>,
) -> Result<Summary> {
    if devices.is_empty() {
        return Err(TrainError::Config("no device to train on".into()));
    }
    let cluster = &options.cluster;
    cluster.validate()?;
    let run = match cluster.is_lead() {
        true => RunDir::open(&options.run_dir)?,
        false => RunDir::follower(&options.run_dir, cluster.rank)?,
    };
    let (root, created) = (run.root().to_path_buf(), run.created());
    match Trainer::<B, T>::start(task, config, options, run, devices) {
        Ok(trainer) => trainer.run(),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir_all(&root);
            }
            Err(e)
        }
    }
}

/// `" (node R of N)"` for a node of a multi-node run.
fn describe_cluster(cluster: &Cluster) -> String {
    match cluster.is_multi_node() {
        true => format!(" (node {} of {})", cluster.rank, cluster.nodes),
        false => String::new(),
    }
}

/// Micro-batches per step for `tokens_per_step` (at least one per device of the run, the
/// same number on each).
pub(crate) fn accumulation(
    tokens_per_step: Option<usize>,
    micro_tokens: usize,
    n_devices: usize,
) -> usize {
    tokens_per_step
        .map_or(1, |t| t.div_ceil(micro_tokens.max(1)))
        .max(1)
        .div_ceil(n_devices)
        * n_devices
}

impl<B: KernelAutodiff, T: Task<B>> Trainer<B, T> {
    /// Everything before the first step: the data, the model (fresh or resumed), the
    /// replicas, the resolved config and the logs.
    fn start(
        mut task: T,
        config: LoopConfig,
        options: TrainOptions,
        run: RunDir,
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
            true => check_resumable(&run, &task)?,
            // Node 0 judges the run directory for every node.
            false if options.cluster.is_lead() => ensure_fresh(&run, &bar)?,
            false => refuse_existing(&run)?,
        }
        for line in task.prepare(&run)? {
            say(&bar, &line);
        }
        let device = &devices[0];
        let restored = match options.resume {
            true => restore_state::<B, T>(&mut task, &config, &run, device, &bar)?,
            false => None,
        };
        let state = match restored {
            Some(state) => state,
            None => fresh_state::<B, T>(&mut task, &config, &options.cluster, device)?,
        };
        let replicas = replicate(state.model, state.optim, &config, &devices)?;
        let collective = Collective::join::<B>(&devices, &options.cluster)?;
        // A resume past max_steps trains nothing: keep the config that the run was made with.
        if state.step < config.schedule.max_steps {
            write_resolved_config(&task.recipe(), &run)?;
        }
        let resumed_at = state.checkpoint.is_some().then_some(state.step);
        let log = MetricsLog::open(&run, resumed_at)?;
        let micro_tokens = task.tokens_per_batch();
        let accum = accumulation(config.run.tokens_per_step, micro_tokens, collective.world());
        say(
            &bar,
            &format!(
                "{}; {} tokens per step ({} × {} micro-batches); {} steps on {}{}",
                task.describe(),
                accum * micro_tokens,
                micro_tokens,
                accum,
                config.schedule.max_steps,
                B::name(device),
                describe_cluster(&options.cluster)
            ),
        );
        if let Some(b) = &bar {
            b.set_position(state.step as u64);
        }
        Ok(Trainer {
            config,
            options,
            task,
            run,
            devices,
            replicas,
            collective,
            accum,
            step_tokens: accum * micro_tokens,
            step: state.step,
            best_val: state.best_val,
            guard: state.guard,
            last_checkpoint: state.checkpoint,
            log,
            bar,
            session: Session {
                start: Instant::now(),
                losses: Vec::new(),
                val: None,
                final_metrics: BTreeMap::new(),
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
        if outcome == Outcome::Interrupted && self.step > 0 && self.is_lead() {
            let path = self.run.checkpoints().step_path(self.step);
            if self.last_checkpoint.as_ref() != Some(&path) {
                self.save_step(None)?;
            }
        }
        if outcome == Outcome::Finished && self.is_lead() {
            self.finish()?;
        }
        Ok(self.summary(outcome))
    }

    /// The task's final measures. With `max_steps` 0 nothing trained: the starting model
    /// is evaluated first, so the same measures come back.
    fn finish(&mut self) -> Result<()> {
        if self.config.schedule.max_steps == 0 && self.session.val.is_none() {
            let model = self.lead().model.valid();
            self.session.val = self.task.evaluate(&model, &self.devices[0])?;
        }
        let model = self.lead().model.valid();
        self.session.final_metrics = self.task.finish(&model, &self.run, &self.devices[0])?;
        Ok(())
    }

    fn pause_requested(&self) -> bool {
        self.options.stop.load(Ordering::SeqCst)
            || self.options.stop_at_step.is_some_and(|s| self.step >= s)
    }

    fn lead(&self) -> &Replica<B, T::Model> {
        &self.replicas[0]
    }

    /// Node 0, which evaluates, samples and saves for the run.
    fn is_lead(&self) -> bool {
        self.options.cluster.is_lead()
    }

    /// One optimizer step: the step's micro-batches, forward and backward, then the
    /// update, unless the loss or the gradient norm is not finite (the run stops, nothing
    /// is updated) or the spike guard objects.
    fn train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let work = self.next_work()?;
        let lr = learning_rate(self.step, &self.config.optimizer, &self.config.schedule);
        let grads = parallel::gradients(&mut self.replicas, &self.collective, work, self.accum)?;
        let (loss, grad_norm) = (grads.loss, grads.grad_norm);
        for (what, value) in [("the loss", loss), ("the gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(self.diverged(self.step + 1, format!("{what} is {value}")));
            }
        }
        let skipped = self.judge(loss, grad_norm)?;
        self.guard.record(&self.config.guard, loss, grad_norm);
        if !skipped {
            parallel::apply(&mut self.replicas, &self.collective, grads, lr)?;
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

    /// The step's micro-batches, in order from the one stream; micro-batch k runs on the
    /// run's device k % world (node by node), and a node skips the others' batches without
    /// reading them. Dropout seeds depend only on (seed, step, micro-batch).
    fn next_work(&mut self) -> Result<Vec<Work<B, T::Model>>> {
        let (accum, seed) = (self.accum, self.config.run.seed);
        let mut work: Vec<Work<B, T::Model>> = self.devices.iter().map(|_| Vec::new()).collect();
        for micro in 0..accum {
            let Some(d) = self.collective.local_index(micro % self.collective.world()) else {
                self.task.skip_batch(&self.devices[0])?;
                continue;
            };
            let dropout_seed =
                seed ^ ((self.step * accum + micro) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            work[d].push((dropout_seed, self.task.next_batch(&self.devices[d])?));
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
        let lead = self.is_lead();
        let (eval, log, sample, save) = (
            lead && (due(r.eval_every) || last),
            due(r.log_every) || last,
            lead && (due(r.sample_every) || last),
            lead && (due(r.checkpoint_every) || last),
        );
        let val = if eval { self.evaluate(report)? } else { None };
        if log || val.is_some() {
            self.log_metrics(report, val)?;
        }
        if val.is_some() {
            self.run_eval_hook();
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

    /// The validation loss (and the task's measures) now. A non-finite loss stops the run
    /// before anything is saved.
    fn evaluate(&mut self, report: &StepReport) -> Result<Option<f64>> {
        let model = self.lead().model.valid();
        let Some(ev) = self.task.evaluate(&model, &self.devices[0])? else {
            return Ok(None);
        };
        let v = ev.loss;
        if !v.is_finite() {
            return Err(self.diverged(self.step, format!("the validation loss is {v}")));
        }
        let mut line = format!(
            "step {}: train loss {:.4}, val loss {v:.4} (perplexity {:.1})",
            self.step,
            report.loss,
            v.exp()
        );
        for (name, value) in &ev.metrics {
            line.push_str(&format!(", {name} {value:.4}"));
        }
        say(&self.bar, &line);
        self.session.val = Some(ev);
        Ok(Some(v))
    }

    fn log_metrics(&mut self, report: &StepReport, val: Option<f64>) -> Result<()> {
        let extra = match (val, &self.session.val) {
            (Some(_), Some(ev)) => ev.metrics.clone(),
            _ => BTreeMap::new(),
        };
        self.log.log(&Metrics {
            step: self.step,
            loss: report.loss,
            val_loss: val,
            lr: report.lr,
            grad_norm: report.grad_norm,
            tokens_per_s: self.step_tokens as f64 / report.seconds,
            elapsed: self.session.start.elapsed().as_secs_f64(),
            skipped: report.skipped,
            extra,
        })
    }

    fn run_eval_hook(&self) {
        if let Some(EvalHook(hook)) = &self.options.after_eval {
            if let Err(e) = hook(&self.options.run_dir) {
                warn(
                    &self.bar,
                    &format!("after the evaluation at step {}: {e}", self.step),
                );
            }
        }
    }

    /// A sample from the run's prompt, into `samples.txt`. Weights or logits that are not
    /// finite stop the run as diverged.
    fn sample(&mut self) -> Result<()> {
        let model = self.lead().model.valid();
        let text = match self.task.sample(&model, &self.devices[0]) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(()),
            Err(TrainError::Model(ModelError::Input(m))) => {
                return Err(self.diverged(self.step, format!("sampling failed: {m}")))
            }
            Err(TrainError::Model(e @ ModelError::NonFinite { .. })) => {
                return Err(self.model_error(e))
            }
            Err(e) => return Err(e),
        };
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
    fn save(&mut self, path: &Path, val: Option<f64>) -> Result<()> {
        let model = self.lead().model.valid();
        let mut ckpt = self.task.save_model(&model).map_err(|e| match e {
            TrainError::Model(e) => self.model_error(e),
            other => other,
        })?;
        self.check_loss(&model, val)?;
        let (decay, no_decay) = self.lead().optim.to_bytes()?;
        ckpt.set_section("optim.decay", decay);
        ckpt.set_section("optim.no_decay", no_decay);
        let state = RunState {
            step: self.step,
            task: self.task.name().to_string(),
            tokenizer: self.task.tokenizer_name().to_string(),
            data_position: self.task.position(),
            best_val_loss: self.best_val,
            train_config: self.task.recipe(),
            guard: self.guard.clone(),
        };
        // The run state joins whatever the task recorded (a classifier's labels, …).
        let serde_json::Value::Object(fields) =
            serde_json::to_value(&state).expect("state serialises")
        else {
            unreachable!("the run state serialises to an object")
        };
        match &mut ckpt.metadata {
            serde_json::Value::Object(meta) => meta.extend(fields),
            other => *other = serde_json::Value::Object(fields),
        }
        ckpt.save(path)?;
        Ok(())
    }

    /// The model's loss on a validation batch must be finite: `val` if just measured, else
    /// one batch now.
    fn check_loss(
        &mut self,
        model: &crate::task::Inner<B, T::Model>,
        val: Option<f64>,
    ) -> Result<()> {
        let probe = match val {
            Some(v) => Some(v),
            None => self.task.probe_loss(model, &self.devices[0])?,
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
        let tokens_per_s = self.step_tokens as f64 / report.seconds;
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
            (s.losses.len() * self.step_tokens) as f64 / s.train_secs
        } else {
            0.0
        };
        Summary {
            outcome,
            steps: self.step,
            losses: s.losses.clone(),
            val_loss: s.val.as_ref().map(|v| v.loss),
            val_metrics: s
                .val
                .as_ref()
                .map(|v| v.metrics.clone())
                .unwrap_or_default(),
            final_metrics: s.final_metrics.clone(),
            best_val_loss: self.best_val,
            skipped_steps: s.skipped,
            seconds: s.start.elapsed().as_secs_f64(),
            tokens_per_s,
            model: self.task.model_config().clone(),
            trainable_params: crate::trainable::count(&self.lead().model),
            total_params: self.lead().model.num_params(),
            last_checkpoint: self.last_checkpoint.clone(),
            run_dir: self.run.root().to_path_buf(),
        }
    }
}

impl<B: KernelAutodiff, T: Task<B>> Drop for Trainer<B, T> {
    /// Leaves the collective (data parallel) and clears the progress bar, however the run
    /// ended.
    fn drop(&mut self) {
        self.collective.leave::<B>();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
