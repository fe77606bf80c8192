//! Everything before the first step: the data source and what the recipe resolves to
//! (checked before anything is written), then a fresh start or the newest valid
//! checkpoint, and a replica of the model on every device.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use llm_bpe::Gpt2Tokenizer;
use llm_data::{Manifest, PrepareConfig, SamplerState, Sampling, ShardSet, TokenBatches};
use llm_model::{Checkpoint, CheckpointDir, Gpt, Gpt2Config};
use serde::{Deserialize, Serialize};

use super::{say, warn};
use crate::config::{ModelConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::guard::SpikeGuard;
use crate::optim::GptOptimizer;
use crate::parallel::Replica;
use crate::run::RunDir;

/// What a checkpoint records besides the model and optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RunState {
    pub(super) step: usize,
    /// The tokenizer, as `--tokenizer` takes it (`generate` reads this).
    pub(super) tokenizer: String,
    /// Where the stream of training batches is.
    #[serde(rename = "sampler")]
    pub(super) batches: SamplerState,
    pub(super) best_val_loss: Option<f64>,
    pub(super) train_config: TrainConfig,
    #[serde(default)]
    pub(super) guard: SpikeGuard,
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

/// Where the tokens come from, checked before anything is written: the tokenizer, and
/// either a prepared directory or the input files.
pub(super) struct DataSource {
    pub(super) tokenizer: Gpt2Tokenizer,
    pub(super) tokenizer_name: String,
    shards: Option<PathBuf>,
    files: Vec<PathBuf>,
}

/// The prepared tokens a run trains on, and their tokenizer.
pub(super) struct Data {
    pub(super) dir: PathBuf,
    pub(super) tokenizer: Gpt2Tokenizer,
    pub(super) tokenizer_name: String,
}

impl DataSource {
    pub(super) fn open(config: &TrainConfig) -> Result<Self> {
        let d = &config.data;
        if let Some(dir) = &d.shards {
            if !dir.join("manifest.json").is_file() {
                return Err(TrainError::key(
                    "data.shards",
                    format!(
                        "{} holds no prepared corpus (no manifest.json); make it with \
                         `cargo xtask prepare --input <files> --out {}`",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
            let manifest = Manifest::load(dir)?;
            return Ok(DataSource {
                tokenizer: Gpt2Tokenizer::load(&manifest.tokenizer.name)?,
                tokenizer_name: manifest.tokenizer.name,
                shards: Some(dir.clone()),
                files: Vec::new(),
            });
        }
        let files = llm_data::text::collect_inputs(&d.inputs)?;
        if files.is_empty() {
            return Err(TrainError::key(
                "data.inputs",
                "no .txt or .jsonl (optionally .gz) files in the given paths",
            ));
        }
        Ok(DataSource {
            tokenizer: Gpt2Tokenizer::load(&d.tokenizer)?,
            tokenizer_name: d.tokenizer.clone(),
            shards: None,
            files,
        })
    }

    /// The prepared directory: `data.shards`, or `data.inputs` tokenized into the run
    /// directory (unless the same inputs are already there).
    pub(super) fn prepare(
        self,
        config: &TrainConfig,
        run: &RunDir,
        bar: &Option<ProgressBar>,
    ) -> Result<Data> {
        let dir = match self.shards {
            Some(dir) => dir,
            None => {
                let d = &config.data;
                let dir = run.data_dir();
                let wanted = llm_data::input_list(&self.files)?;
                let current = Manifest::load(&dir).ok().filter(|m| {
                    m.inputs == wanted
                        && m.tokenizer.name == d.tokenizer
                        && m.val_fraction == d.val_fraction
                });
                if current.is_none() {
                    let prep = PrepareConfig {
                        val_fraction: d.val_fraction,
                        shard_tokens: 100_000_000,
                        text_field: d.text_field.clone(),
                    };
                    let report = llm_data::prepare(
                        &d.inputs,
                        &dir,
                        &self.tokenizer,
                        &d.tokenizer,
                        &prep,
                        &|_, _| {},
                    )?;
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
                dir
            }
        };
        Ok(Data {
            dir,
            tokenizer: self.tokenizer,
            tokenizer_name: self.tokenizer_name,
        })
    }
}

/// What the recipe resolves to for this tokenizer and these devices.
pub(super) struct Plan {
    pub(super) model: Gpt2Config,
    pub(super) seq_len: usize,
    /// Micro-batches per optimizer step (a multiple of the number of devices).
    pub(super) accum: usize,
    pub(super) step_tokens: usize,
}

impl Plan {
    pub(super) fn new(config: &TrainConfig, vocab_size: usize, n_devices: usize) -> Result<Plan> {
        let model = config.model.resolve(vocab_size)?;
        let seq_len = config.seq_len(&model)?;
        let micro_tokens = config.run.batch_size * seq_len;
        // At least one micro-batch per device, and the same number on each.
        let accum = config
            .run
            .tokens_per_step
            .map_or(1, |t| t.div_ceil(micro_tokens))
            .max(1)
            .div_ceil(n_devices)
            * n_devices;
        Ok(Plan {
            model,
            seq_len,
            accum,
            step_tokens: accum * micro_tokens,
        })
    }
}

/// The model, optimizer, data position and progress a run starts from.
pub(super) struct State<B: AutodiffBackend> {
    pub(super) model: Gpt<B>,
    pub(super) optim: GptOptimizer<B>,
    pub(super) batches: TokenBatches,
    pub(super) step: usize,
    pub(super) best_val: Option<f64>,
    pub(super) guard: SpikeGuard,
    /// The checkpoint it came from.
    pub(super) checkpoint: Option<PathBuf>,
}

/// A fresh start must not bury a run: a complete checkpoint in the directory is refused
/// (continue it with `resume`), and the incomplete ones of an attempt killed early are set
/// aside (renamed `*.corrupt`, never deleted).
pub(super) fn ensure_fresh(run: &RunDir, bar: &Option<ProgressBar>) -> Result<()> {
    let ckpts = run.checkpoints();
    if let Some((checkpoint, info)) = ckpts.newest_complete()? {
        return Err(TrainError::RunExists {
            dir: run.root().to_path_buf(),
            checkpoint,
            step: info.step().unwrap_or(0),
        });
    }
    for path in ckpts.newest_first()? {
        let to = CheckpointDir::set_aside(&path)?;
        warn(
            bar,
            &format!(
                "{} is incomplete (an earlier attempt was killed while writing it): moved it to {}",
                path.display(),
                to.display()
            ),
        );
    }
    Ok(())
}

pub(super) fn fresh_state<B: AutodiffBackend>(
    config: &TrainConfig,
    plan: &Plan,
    data: &Data,
    device: &B::Device,
) -> Result<State<B>> {
    let r = &config.run;
    B::seed(device, r.seed);
    let train_set = ShardSet::open(&data.dir, "train")?;
    let batches = match config.data.sampling {
        Sampling::Random => TokenBatches::random(train_set, r.batch_size, plan.seq_len, r.seed)?,
        Sampling::Sequential => {
            TokenBatches::sequential(train_set, r.batch_size, plan.seq_len, r.seed)?
        }
    };
    Ok(State {
        model: plan.model.init(device)?,
        optim: GptOptimizer::new(&config.optimizer),
        batches,
        step: 0,
        best_val: None,
        guard: SpikeGuard::default(),
        checkpoint: None,
    })
}

/// A resume must not change the model's shape or the batch shape: checked against the
/// newest complete checkpoint's header before any data is prepared, and again against the
/// checkpoint actually loaded.
pub(super) fn check_resumable(run: &RunDir, plan: &Plan) -> Result<()> {
    match run.checkpoints().newest_complete()? {
        Some((_, info)) => same_shape(&info.config, plan),
        None => Ok(()),
    }
}

fn same_shape(checkpoint: &Gpt2Config, plan: &Plan) -> Result<()> {
    let diffs = shape_differences(checkpoint, &plan.model);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(TrainError::Resume(format!(
        "the config changes the model's shape ({})",
        diffs.join("; ")
    )))
}

/// The state in the newest valid checkpoint (step or best, whichever is newer). Damaged
/// ones are set aside with a warning that names the file and the fault; with none left,
/// `None` (the run starts from step 0).
pub(super) fn restore_state<B: AutodiffBackend>(
    config: &TrainConfig,
    plan: &Plan,
    data: &Data,
    run: &RunDir,
    device: &B::Device,
    bar: &Option<ProgressBar>,
) -> Result<Option<State<B>>> {
    let Some((path, ckpt)) = newest_valid(run, bar)? else {
        warn(
            bar,
            &format!(
                "no usable checkpoint in {}: starting from step 0",
                run.checkpoints().path().display()
            ),
        );
        return Ok(None);
    };
    let state = run_state(&path, &ckpt, config, plan)?;
    let section = |name: &str| {
        ckpt.section(name)
            .ok_or_else(|| TrainError::Checkpoint(format!("{}: no {name} section", path.display())))
    };
    let optim = GptOptimizer::new(&config.optimizer).load_bytes(
        section("optim.decay")?,
        section("optim.no_decay")?,
        device,
    )?;
    let batches = TokenBatches::restore(ShardSet::open(&data.dir, "train")?, state.batches)?;
    say(
        bar,
        &format!("resuming at step {} from {}", state.step, path.display()),
    );
    Ok(Some(State {
        model: ckpt.model(device)?,
        optim,
        batches,
        step: state.step,
        best_val: state.best_val_loss,
        guard: state.guard,
        checkpoint: Some(path),
    }))
}

/// The newest checkpoint that loads and verifies, warning about each damaged one.
fn newest_valid(run: &RunDir, bar: &Option<ProgressBar>) -> Result<Option<(PathBuf, Checkpoint)>> {
    Ok(run.checkpoints().newest_valid(|s| {
        warn(
            bar,
            &format!(
                "{} (moved it to {}); falling back to an older checkpoint",
                s.error,
                s.moved_to.display()
            ),
        )
    })?)
}

/// The run state a checkpoint records, checked to fit this config.
fn run_state(
    path: &Path,
    ckpt: &Checkpoint,
    config: &TrainConfig,
    plan: &Plan,
) -> Result<RunState> {
    same_shape(&ckpt.config, plan)?;
    let state: RunState = serde_json::from_value(ckpt.metadata.clone())
        .map_err(|e| TrainError::Checkpoint(format!("{}: bad run state: {e}", path.display())))?;
    let (b, t) = (state.batches.batch_size, state.batches.seq_len);
    if (b, t) != (config.run.batch_size, plan.seq_len) {
        return Err(TrainError::Resume(format!(
            "the batch shape changed from {b}×{t} to {}×{}",
            config.run.batch_size, plan.seq_len
        )));
    }
    Ok(state)
}

/// The lead model and optimizer, and a copy of each on every other device.
pub(super) fn replicate<B: AutodiffBackend>(
    model: Gpt<B>,
    optim: GptOptimizer<B>,
    config: &TrainConfig,
    devices: &[B::Device],
) -> Result<Vec<Replica<B>>> {
    let mut replicas = vec![Replica {
        model,
        optim,
        device: devices[0].clone(),
    }];
    for d in &devices[1..] {
        let (decay, no_decay) = replicas[0].optim.to_bytes()?;
        replicas.push(Replica {
            model: replicas[0].model.clone().fork(d),
            optim: GptOptimizer::<B>::new(&config.optimizer).load_bytes(&decay, &no_decay, d)?,
            device: d.clone(),
        });
    }
    Ok(replicas)
}

/// Writes `config.json`: the recipe with the model spelled out.
pub(super) fn write_resolved_config(
    config: &TrainConfig,
    model: &Gpt2Config,
    run: &RunDir,
) -> Result<()> {
    let mut resolved = config.clone();
    resolved.model = ModelConfig {
        preset: None,
        n_layer: Some(model.n_layer),
        n_head: Some(model.n_head),
        n_embd: Some(model.n_embd),
        n_positions: Some(model.n_positions),
        n_inner: Some(model.inner_dim()),
        vocab_size: Some(model.vocab_size),
        dropout: Some(model.resid_pdrop),
        tie_word_embeddings: Some(model.tie_word_embeddings),
        qkv_bias: Some(model.qkv_bias),
    };
    let json = serde_json::to_string_pretty(&resolved).expect("config serialises");
    llm_common::fs::atomic_write(&run.config_path(), json.as_bytes())
        .map_err(|e| TrainError::io(run.config_path(), e))
}
