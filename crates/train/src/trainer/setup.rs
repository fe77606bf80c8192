//! Everything before the first step, for any task: a fresh start or the newest valid
//! checkpoint (checked to be this task's, with this model's shape), and a replica of the
//! model on every device.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use llm_model::KernelAutodiff;
use llm_model::{Checkpoint, CheckpointDir, Gpt2Config};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{say, warn};
use crate::cluster::Cluster;
use crate::config::LoopConfig;
use crate::error::{Result, TrainError};
use crate::guard::SpikeGuard;
use crate::optim::GptOptimizer;
use crate::parallel::Replica;
use crate::run::RunDir;
use crate::task::{Objective, Task};

/// What a checkpoint records besides the model and optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RunState {
    pub(super) step: usize,
    /// The task that wrote it (`pretrain` in checkpoints older than the field).
    #[serde(default = "pretrain")]
    pub(super) task: String,
    /// The tokenizer, as `--tokenizer` takes it (`generate` reads this).
    pub(super) tokenizer: String,
    /// Where the stream of training batches is ([`Task::position`]); `sampler` in
    /// checkpoints written before the rename.
    #[serde(alias = "sampler")]
    pub(super) data_position: Value,
    pub(super) best_val_loss: Option<f64>,
    /// The recipe ([`Task::recipe`]).
    pub(super) train_config: Value,
    #[serde(default)]
    pub(super) guard: SpikeGuard,
}

fn pretrain() -> String {
    "pretrain".into()
}

/// The model, optimizer and progress a run starts from.
pub(super) struct State<B: KernelAutodiff, T: Task<B>> {
    pub(super) model: T::Model,
    pub(super) optim: GptOptimizer<B, T::Model>,
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
    refuse_existing(run)?;
    for path in run.checkpoints().newest_first()? {
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

/// A fresh start is refused where the run has a complete checkpoint (every node checks;
/// node 0 also sets incomplete ones aside, in [`ensure_fresh`]).
pub(super) fn refuse_existing(run: &RunDir) -> Result<()> {
    match run.checkpoints().newest_complete()? {
        Some((checkpoint, info)) => Err(TrainError::RunExists {
            // The run's directory: node 0's, where the checkpoints are.
            dir: (run.checkpoints().path().parent())
                .unwrap_or(run.root())
                .to_path_buf(),
            checkpoint,
            step: info.step().unwrap_or(0),
        }),
        None => Ok(()),
    }
}

/// Step 0: the backend RNG seeded with `run.seed`, then the task's fresh model. On several
/// nodes its parameter ids are numbered in module order, so that every node's all-reduce
/// pairs the same tensors (Burn draws them at random; checkpoints keep them).
pub(super) fn fresh_state<B: KernelAutodiff, T: Task<B>>(
    task: &mut T,
    config: &LoopConfig,
    cluster: &Cluster,
    device: &B::Device,
) -> Result<State<B, T>> {
    B::seed(device, config.run.seed);
    let model = task.init_model(device)?;
    Ok(State {
        model: match cluster.is_multi_node() {
            true => crate::parallel::number_param_ids(model),
            false => model,
        },
        optim: GptOptimizer::new(&config.optimizer),
        step: 0,
        best_val: None,
        guard: SpikeGuard::default(),
        checkpoint: None,
    })
}

/// A resume must continue the same task with the same model shape: checked against the
/// newest complete checkpoint's header before any data is prepared, and again against the
/// checkpoint actually loaded.
pub(super) fn check_resumable<B: KernelAutodiff, T: Task<B>>(run: &RunDir, task: &T) -> Result<()> {
    match run.checkpoints().newest_complete()? {
        Some((path, info)) => same_run(&path, &info.config, &info.metadata, task),
        None => Ok(()),
    }
}

fn same_run<B: KernelAutodiff, T: Task<B>>(
    path: &Path,
    config: &Gpt2Config,
    metadata: &Value,
    task: &T,
) -> Result<()> {
    let theirs = metadata["task"].as_str().unwrap_or("pretrain");
    if theirs != task.name() {
        return Err(TrainError::Resume(format!(
            "{} is a checkpoint of a {theirs} run; it cannot resume as {}",
            path.display(),
            task.name()
        )));
    }
    let diffs: Vec<String> = config
        .differences(task.model_config())
        .into_iter()
        .map(|(k, a, b)| format!("model.{k}: checkpoint {a}, config {b}"))
        .collect();
    if diffs.is_empty() {
        return Ok(());
    }
    Err(TrainError::Resume(format!(
        "the config changes the model's shape ({})",
        diffs.join("; ")
    )))
}

/// The state in the newest valid checkpoint (step or best, whichever is newer), with the
/// task's data position restored. Damaged ones are set aside with a warning that names the
/// file and the fault; with none left, `None` (the run starts from step 0).
pub(super) fn restore_state<B: KernelAutodiff, T: Task<B>>(
    task: &mut T,
    config: &LoopConfig,
    run: &RunDir,
    device: &B::Device,
    bar: &Option<ProgressBar>,
) -> Result<Option<State<B, T>>> {
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
    same_run(&path, &ckpt.config, &ckpt.metadata, task)?;
    let state: RunState = serde_json::from_value(ckpt.metadata.clone())
        .map_err(|e| TrainError::Checkpoint(format!("{}: bad run state: {e}", path.display())))?;
    let section = |name: &str| {
        ckpt.section(name)
            .ok_or_else(|| TrainError::Checkpoint(format!("{}: no {name} section", path.display())))
    };
    let optim = GptOptimizer::new(&config.optimizer).load_bytes(
        section("optim.decay")?,
        section("optim.no_decay")?,
        device,
    )?;
    task.restore_position(state.data_position)?;
    say(
        bar,
        &format!("resuming at step {} from {}", state.step, path.display()),
    );
    Ok(Some(State {
        model: task.load_model(&ckpt, device)?,
        optim,
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

/// The lead model and optimizer, and a copy of each on every other device.
pub(super) fn replicate<B: KernelAutodiff, M: Objective<B>>(
    model: M,
    optim: GptOptimizer<B, M>,
    config: &LoopConfig,
    devices: &[B::Device],
) -> Result<Vec<Replica<B, M>>> {
    let mut replicas = vec![Replica {
        model,
        optim,
        device: devices[0].clone(),
    }];
    for d in &devices[1..] {
        let (decay, no_decay) = replicas[0].optim.to_bytes()?;
        replicas.push(Replica {
            model: replicas[0].model.clone().fork(d),
            optim: GptOptimizer::new(&config.optimizer).load_bytes(&decay, &no_decay, d)?,
            device: d.clone(),
        });
    }
    Ok(replicas)
}

/// Writes `config.json`: the task's recipe, resolved.
pub(super) fn write_resolved_config(recipe: &Value, run: &RunDir) -> Result<()> {
    let json = serde_json::to_string_pretty(recipe).expect("config serialises");
    llm_common::fs::atomic_write(&run.config_path(), json.as_bytes())
        .map_err(|e| TrainError::io(run.config_path(), e))
}
