//! The pre-training loop, generic over `B: AutodiffBackend`.
//!
//! Each step: `accum` micro-batches (forward, loss / accum, backward, accumulate), then the
//! learning rate from the schedule, global-norm clipping and AdamW in two parameter groups.
//! Evaluation and samples run on `model.valid()`: the inner backend, with no autodiff graph
//! (so memory does not grow) and no dropout. Checkpoints hold everything needed to continue
//! exactly: model, optimizer state, step, the data sampler's position and RNG. Dropout masks
//! come from the backend RNG, re-seeded from the step number before every micro-batch, so a
//! resumed run draws the same masks it would have drawn.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use indicatif::{ProgressBar, ProgressStyle};
use llm_bpe::Gpt2Tokenizer;
use llm_data::{Manifest, PrepareConfig, SamplerState, Sampling, ShardSet, TokenBatches};
use llm_model::{cross_entropy, generate, Checkpoint, GenerateConfig, Gpt, Gpt2Config};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::metrics::{Metrics, MetricsLog};
use crate::optim::GptOptimizer;
use crate::parallel::{self, Replica, StepResult, Work};
use crate::run::RunDir;
use crate::schedule::learning_rate;

/// How to run: where, whether to resume, and how to be stopped.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
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
    pub seconds: f64,
    /// Training throughput of this session (evaluation and samples excluded).
    pub tokens_per_s: f64,
    pub model: Gpt2Config,
    pub last_checkpoint: Option<PathBuf>,
    pub run_dir: PathBuf,
}

/// What a checkpoint records besides the model and optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    step: usize,
    /// The tokenizer, as `--tokenizer` takes it (`generate` reads this).
    tokenizer: String,
    sampler: SamplerState,
    best_val_loss: Option<f64>,
    train_config: TrainConfig,
}

/// The model fields that make two configs incompatible for resuming.
fn shape_differences(a: &Gpt2Config, b: &Gpt2Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("model.{name}: checkpoint {x}, config {y}"));
        }
    };
    cmp(
        "vocab_size",
        a.vocab_size.to_string(),
        b.vocab_size.to_string(),
    );
    cmp(
        "n_positions",
        a.n_positions.to_string(),
        b.n_positions.to_string(),
    );
    cmp("n_embd", a.n_embd.to_string(), b.n_embd.to_string());
    cmp("n_layer", a.n_layer.to_string(), b.n_layer.to_string());
    cmp("n_head", a.n_head.to_string(), b.n_head.to_string());
    cmp(
        "n_inner",
        a.inner_dim().to_string(),
        b.inner_dim().to_string(),
    );
    cmp(
        "tie_word_embeddings",
        a.tie_word_embeddings.to_string(),
        b.tie_word_embeddings.to_string(),
    );
    cmp("qkv_bias", a.qkv_bias.to_string(), b.qkv_bias.to_string());
    out
}

/// The tokens to train on: a prepared directory and its tokenizer.
struct Data {
    dir: PathBuf,
    tokenizer: Gpt2Tokenizer,
    tokenizer_name: String,
}

/// Prepares `data.inputs` into the run directory (unless already there), or opens
/// `data.shards`.
fn setup_data(config: &TrainConfig, run: &RunDir, bar: &Option<ProgressBar>) -> Result<Data> {
    let d = &config.data;
    if let Some(dir) = &d.shards {
        if !dir.join("manifest.json").is_file() {
            return Err(TrainError::Config(format!(
                "`data.shards`: {} holds no prepared corpus (no manifest.json); make it with \
                 `cargo xtask prepare --input <files> --out {}`",
                dir.display(),
                dir.display()
            )));
        }
        let manifest = Manifest::load(dir)?;
        let tokenizer = Gpt2Tokenizer::load(&manifest.tokenizer.name)?;
        return Ok(Data {
            dir: dir.clone(),
            tokenizer,
            tokenizer_name: manifest.tokenizer.name,
        });
    }
    let tokenizer = Gpt2Tokenizer::load(&d.tokenizer)?;
    let dir = run.data_dir();
    let wanted = llm_data::input_list(&llm_data::text::collect_inputs(&d.inputs)?)?;
    let current = Manifest::load(&dir).ok().filter(|m| {
        m.inputs == wanted && m.tokenizer.name == d.tokenizer && m.val_fraction == d.val_fraction
    });
    if current.is_none() {
        let prep = PrepareConfig {
            val_fraction: d.val_fraction,
            shard_tokens: 100_000_000,
            text_field: d.text_field.clone(),
        };
        let report =
            llm_data::prepare(&d.inputs, &dir, &tokenizer, &d.tokenizer, &prep, &|_, _| {})?;
        say(
            bar,
            &format!(
                "prepared {} tokens ({} train, {} val) into {}",
                report.tokens,
                report.manifest.train.tokens,
                report.manifest.val.tokens,
                dir.display()
            ),
        );
    }
    Ok(Data {
        dir,
        tokenizer,
        tokenizer_name: d.tokenizer.clone(),
    })
}

fn say(bar: &Option<ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.println(line),
        None => tracing::info!("{line}"),
    }
}

/// Mean validation loss over `batches` sequential batches from the start of the split (the
/// same batches at every evaluation, so values compare). `None` if there is no val data.
fn evaluate<B: Backend>(
    model: &Gpt<B>,
    dir: &Path,
    batches: usize,
    batch_size: usize,
    seq_len: usize,
    device: &B::Device,
) -> Result<Option<f64>> {
    let set = ShardSet::open(dir, "val")?;
    if set.num_shards() == 0 || batches == 0 {
        return Ok(None);
    }
    let mut tb = match TokenBatches::sequential(set, batch_size, seq_len, 0) {
        Ok(tb) => tb,
        Err(llm_data::DataError::TooSmall(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut total = 0.0;
    for _ in 0..batches {
        let batch = tb.next_batch::<B>(device)?;
        let loss: f64 = cross_entropy(model.forward(batch.inputs), batch.targets)
            .into_scalar()
            .elem();
        total += loss;
    }
    Ok(Some(total / batches as f64))
}

/// A sample from the run's fixed prompt.
fn sample<B: Backend>(
    model: &Gpt<B>,
    tok: &Gpt2Tokenizer,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<String> {
    let r = &config.run;
    let mut prompt = tok.encode_ordinary(&r.sample_prompt);
    if prompt.is_empty() {
        prompt.extend(tok.eot_id());
    }
    let keep = model.n_positions().saturating_sub(1).max(1);
    if prompt.len() > keep {
        prompt.drain(..prompt.len() - keep);
    }
    let g = GenerateConfig {
        max_new_tokens: r.sample_tokens,
        temperature: r.sample_temperature,
        top_k: r.sample_top_k,
        seed: r.seed,
        stop_token: None,
    };
    let new = generate(model, &prompt, &g, device, |_| {})?;
    // A padded vocabulary can produce ids the tokenizer lacks: drop those.
    let ids: Vec<u32> = prompt
        .iter()
        .chain(&new)
        .copied()
        .filter(|&i| (i as usize) < tok.vocab_size())
        .collect();
    Ok(tok.decode(&ids)?)
}

struct Saver<'a> {
    run: &'a RunDir,
    keep_last: usize,
    model_config: &'a Gpt2Config,
    tokenizer_name: &'a str,
    train_config: &'a TrainConfig,
}

impl Saver<'_> {
    fn save<B: AutodiffBackend>(
        &self,
        path: &Path,
        model: &Gpt<B>,
        optim: &GptOptimizer<B>,
        step: usize,
        sampler: &SamplerState,
        best: Option<f64>,
    ) -> Result<()> {
        let mut ckpt = Checkpoint::from_model(model, self.model_config)?;
        let (decay, no_decay) = optim.to_bytes()?;
        ckpt.set_section("optim.decay", decay);
        ckpt.set_section("optim.no_decay", no_decay);
        let state = RunState {
            step,
            tokenizer: self.tokenizer_name.to_string(),
            sampler: sampler.clone(),
            best_val_loss: best,
            train_config: self.train_config.clone(),
        };
        ckpt.metadata = serde_json::to_value(&state).expect("state serialises");
        ckpt.save(path)?;
        Ok(())
    }

    /// Saves the step checkpoint, then prunes old ones (only once the new one is in place).
    fn save_step<B: AutodiffBackend>(
        &self,
        model: &Gpt<B>,
        optim: &GptOptimizer<B>,
        step: usize,
        sampler: &SamplerState,
        best: Option<f64>,
    ) -> Result<PathBuf> {
        let path = self.run.checkpoint_path(step);
        self.save(&path, model, optim, step, sampler, best)?;
        self.run.prune(self.keep_last)?;
        Ok(path)
    }
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
pub fn train_on<B: AutodiffBackend>(
    config: TrainConfig,
    options: TrainOptions,
    devices: Vec<B::Device>,
) -> Result<Summary> {
    config.validate()?;
    if devices.is_empty() {
        return Err(TrainError::Config("no device to train on".into()));
    }
    let device = devices[0].clone();
    let run = RunDir::create(&options.run_dir)?;
    let bar = options.progress.then(|| {
        ProgressBar::new(config.schedule.max_steps as u64).with_style(
            ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        )
    });

    let data = setup_data(&config, &run, &bar)?;
    let model_config = config.model.resolve(data.tokenizer.vocab_size())?;
    let seq_len = config.data.seq_len.unwrap_or(model_config.n_positions);
    if seq_len == 0 || seq_len > model_config.n_positions {
        return Err(TrainError::Config(format!(
            "`data.seq_len` {seq_len} must be between 1 and the model's n_positions {}",
            model_config.n_positions
        )));
    }
    let r = &config.run;
    let micro_tokens = r.batch_size * seq_len;
    let n_dev = devices.len();
    // At least one micro-batch per device, and the same number on each.
    let accum = r
        .tokens_per_step
        .map_or(1, |t| t.div_ceil(micro_tokens))
        .max(1)
        .div_ceil(n_dev)
        * n_dev;
    let step_tokens = accum * micro_tokens;

    let saver = Saver {
        run: &run,
        keep_last: r.keep_last,
        model_config: &model_config,
        tokenizer_name: &data.tokenizer_name,
        train_config: &config,
    };

    // A fresh model, or the newest checkpoint.
    B::seed(&device, r.seed);
    let mut model: Gpt<B> = model_config.init(&device)?;
    let mut optim = GptOptimizer::<B>::new(&config.optimizer);
    let train_set = ShardSet::open(&data.dir, "train")?;
    let (mut step, mut sampler, mut best_val, mut last_checkpoint) = if options.resume {
        let ckpts = run.checkpoints()?;
        let (ckpt_step, path) = ckpts.last().cloned().ok_or_else(|| {
            TrainError::Resume(format!(
                "no checkpoint in {}",
                run.root().join("checkpoints").display()
            ))
        })?;
        let ckpt = Checkpoint::load(&path)?;
        let diffs = shape_differences(&ckpt.config, &model_config);
        if !diffs.is_empty() {
            return Err(TrainError::Resume(format!(
                "the config changes the model's shape ({})",
                diffs.join("; ")
            )));
        }
        let state: RunState = serde_json::from_value(ckpt.metadata.clone()).map_err(|e| {
            TrainError::Checkpoint(format!("{}: bad run state: {e}", path.display()))
        })?;
        if state.sampler.batch_size != r.batch_size || state.sampler.seq_len != seq_len {
            return Err(TrainError::Resume(format!(
                "the batch shape changed from {}×{} to {}×{seq_len}",
                state.sampler.batch_size, state.sampler.seq_len, r.batch_size
            )));
        }
        model = ckpt.model(&device)?;
        let section = |name: &str| {
            ckpt.section(name).ok_or_else(|| {
                TrainError::Checkpoint(format!("{}: no {name} section", path.display()))
            })
        };
        optim = optim.load_bytes(section("optim.decay")?, section("optim.no_decay")?, &device)?;
        let sampler = TokenBatches::restore(train_set, state.sampler)?;
        say(
            &bar,
            &format!("resumed from {} (step {ckpt_step})", path.display()),
        );
        (state.step, sampler, state.best_val_loss, Some(path))
    } else {
        let sampler = match config.data.sampling {
            Sampling::Random => TokenBatches::random(train_set, r.batch_size, seq_len, r.seed)?,
            Sampling::Sequential => {
                TokenBatches::sequential(train_set, r.batch_size, seq_len, r.seed)?
            }
        };
        (0, sampler, None, None)
    };

    // Data parallel: a replica of the model and optimizer on every device.
    let mut replicas = vec![Replica {
        model,
        optim,
        device: device.clone(),
    }];
    for d in &devices[1..] {
        let (decay, no_decay) = replicas[0].optim.to_bytes()?;
        replicas.push(Replica {
            model: replicas[0].model.clone().fork(d),
            optim: GptOptimizer::<B>::new(&config.optimizer).load_bytes(&decay, &no_decay, d)?,
            device: d.clone(),
        });
    }
    parallel::join::<B>(&devices)?;

    // The resolved recipe, with the model spelled out.
    let mut resolved = config.clone();
    resolved.model = ModelConfig {
        preset: None,
        n_layer: Some(model_config.n_layer),
        n_head: Some(model_config.n_head),
        n_embd: Some(model_config.n_embd),
        n_positions: Some(model_config.n_positions),
        n_inner: Some(model_config.inner_dim()),
        vocab_size: Some(model_config.vocab_size),
        dropout: Some(model_config.resid_pdrop),
        tie_word_embeddings: Some(model_config.tie_word_embeddings),
        qkv_bias: Some(model_config.qkv_bias),
    };
    let json = serde_json::to_string_pretty(&resolved).expect("config serialises");
    llm_bpe::fs::atomic_write(&run.config_path(), json.as_bytes())
        .map_err(|e| TrainError::io(run.config_path(), e))?;
    let mut log = MetricsLog::open(&run, options.resume.then_some(step))?;

    say(
        &bar,
        &format!(
            "{} parameters ({} layers × {} wide, context {}); {} tokens per step ({} × {seq_len} × {accum} micro-batches); {} steps on {}",
            model_config.num_params(),
            model_config.n_layer,
            model_config.n_embd,
            model_config.n_positions,
            step_tokens,
            r.batch_size,
            config.schedule.max_steps,
            B::name(&device)
        ),
    );
    if let Some(b) = &bar {
        b.set_position(step as u64);
    }

    let start = Instant::now();
    let mut losses = Vec::new();
    let mut val_loss = None;
    let mut train_secs = 0.0;
    let max_steps = config.schedule.max_steps;
    let mut outcome = Outcome::Finished;
    let print_every = (max_steps / 20).max(r.log_every);
    while step < max_steps {
        if options.stop.load(Ordering::SeqCst) || options.stop_at_step.is_some_and(|s| step >= s) {
            outcome = Outcome::Interrupted;
            break;
        }
        let step_start = Instant::now();
        // The step's micro-batches, in order from the one sampler; micro-batch k runs on
        // device k % n. Dropout seeds depend only on (seed, step, micro-batch).
        let mut work: Vec<Work<B>> = (0..n_dev).map(|_| Vec::new()).collect();
        for micro in 0..accum {
            let seed =
                r.seed ^ ((step * accum + micro) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let d = micro % n_dev;
            work[d].push((seed, sampler.next_batch::<B>(&devices[d])?));
        }
        let lr = learning_rate(step, &config.optimizer, &config.schedule);
        let StepResult { loss, grad_norm } = parallel::step(&mut replicas, work, accum, lr)?;
        for (what, value) in [("the loss", loss), ("the gradient norm", grad_norm)] {
            if !value.is_finite() {
                parallel::leave::<B>(n_dev);
                return Err(TrainError::Diverged {
                    step: step + 1,
                    what,
                    value,
                    checkpoint: last_checkpoint,
                });
            }
        }
        let lead = &replicas[0];
        step += 1;
        losses.push(loss);
        let step_secs = step_start.elapsed().as_secs_f64();
        train_secs += step_secs;
        let tokens_per_s = step_tokens as f64 / step_secs;

        let last = step == max_steps;
        let every = |n: usize| n > 0 && step % n == 0;
        let mut step_val = None;
        if every(r.eval_every) || last {
            step_val = evaluate(
                &lead.model.valid(),
                &data.dir,
                r.eval_batches,
                r.batch_size,
                seq_len,
                &device,
            )?;
            if let Some(v) = step_val {
                val_loss = Some(v);
                say(
                    &bar,
                    &format!(
                        "step {step}: train loss {loss:.4}, val loss {v:.4} (perplexity {:.1})",
                        v.exp()
                    ),
                );
                if best_val.is_none_or(|b| v < b) {
                    best_val = Some(v);
                    saver.save(
                        &run.best_path(),
                        &lead.model,
                        &lead.optim,
                        step,
                        sampler.state(),
                        best_val,
                    )?;
                }
            }
        }
        if every(r.log_every) || step_val.is_some() || last {
            log.log(&Metrics {
                step,
                loss,
                val_loss: step_val,
                lr,
                grad_norm,
                tokens_per_s,
                elapsed: start.elapsed().as_secs_f64(),
            })?;
        }
        if every(r.sample_every) || last {
            let text = sample(&lead.model.valid(), &data.tokenizer, &config, &device)?;
            log.sample(step, &text)?;
            say(&bar, &format!("--- sample at step {step} ---\n{text}\n---"));
        }
        if every(r.checkpoint_every) || last {
            let path =
                saver.save_step(&lead.model, &lead.optim, step, sampler.state(), best_val)?;
            last_checkpoint = Some(path);
        }
        match &bar {
            Some(b) => {
                b.set_position(step as u64);
                b.set_message(format!("loss {loss:.3} lr {lr:.1e} {tokens_per_s:.0} tok/s"));
            }
            // No terminal: a log line about 20 times per run instead of a bar.
            None if every(print_every) || last => tracing::info!(
                "step {step}/{max_steps}: loss {loss:.4}, lr {lr:.2e}, grad norm {grad_norm:.3}, {tokens_per_s:.0} tokens/s, {:.0} s",
                start.elapsed().as_secs_f64()
            ),
            None => {}
        }
    }
    if outcome == Outcome::Interrupted
        && last_checkpoint.as_ref() != Some(&run.checkpoint_path(step))
        && step > 0
    {
        let lead = &replicas[0];
        let path = saver.save_step(&lead.model, &lead.optim, step, sampler.state(), best_val)?;
        last_checkpoint = Some(path);
    }
    parallel::leave::<B>(n_dev);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let tokens_per_s = if train_secs > 0.0 {
        (losses.len() * step_tokens) as f64 / train_secs
    } else {
        0.0
    };
    Ok(Summary {
        outcome,
        steps: step,
        losses,
        val_loss,
        best_val_loss: best_val,
        seconds: start.elapsed().as_secs_f64(),
        tokens_per_s,
        model: model_config,
        last_checkpoint,
        run_dir: run.root().to_path_buf(),
    })
}
