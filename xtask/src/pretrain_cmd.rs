//! `pretrain`: train a GPT from a run recipe in `configs/`, or continue a run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_model::backend::{run_autodiff_on, AutodiffTask, BackendKind};
use llm_model::KernelAutodiff;
use llm_train::{train, Outcome, Summary, TrainConfig, TrainOptions};

#[derive(Args)]
pub struct PretrainArgs {
    /// The run recipe (model, data, optimizer, schedule, run settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Change one setting: `--set optimizer.lr=3e-4 --set model.n_layer=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The run's name (`run.name`): it trains in `runs/<name>/`.
    #[arg(long)]
    name: Option<String>,
    /// Optimizer steps to train for (`schedule.max_steps`).
    #[arg(long)]
    max_steps: Option<usize>,
    /// The run directory (default `runs/<name>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its newest valid checkpoint (step or best;
    /// damaged ones are moved aside as `*.corrupt`), with the config it saved (plus any
    /// --set), or with --config if given. With no usable checkpoint it starts from step 0.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Pause after this many steps (saving a checkpoint); `--resume` continues the run.
    #[arg(long, value_name = "STEP")]
    stop_at_step: Option<usize>,
    /// The Burn backend to train on (see `cargo xtask backends`).
    #[arg(long, default_value_t = crate::model_cmd::default_backend())]
    backend: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Training on several machines: one process per node, as with torchrun (see
/// docs/train.md, "Several machines").
#[derive(Args)]
pub struct ClusterArgs {
    /// Nodes (processes) in the run, each with `run.devices` devices.
    #[arg(long, default_value_t = 1, value_parser = crate::args::positive)]
    nodes: usize,
    /// This node, from 0 to N-1; node 0 hosts the coordinator, evaluates and saves.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// HOST:PORT of node 0's coordinator, the same on every node.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// HOST:PORT where the other nodes reach this one (default on one machine: the
    /// coordinator's host, its port + 1 + rank).
    #[arg(long, value_name = "HOST:PORT")]
    node_address: Option<String>,
    /// Seconds to wait for the other nodes at any exchange before stopping with an error.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = crate::args::positive)]
    collective_timeout: usize,
}

impl ClusterArgs {
    fn cluster(&self) -> llm_train::Cluster {
        llm_train::Cluster {
            nodes: self.nodes,
            rank: self.node_rank,
            coordinator: self.coordinator.clone(),
            node_address: self.node_address.clone(),
            timeout: std::time::Duration::from_secs(self.collective_timeout as u64),
        }
    }
}

const DEFAULT_CONFIG: &str = "configs/shakespeare-small.json";

struct Job {
    config: TrainConfig,
    options: TrainOptions,
}

impl AutodiffTask for Job {
    type Output = llm_train::Result<Summary>;

    fn run<B: KernelAutodiff>(self, device: B::Device) -> Self::Output {
        train::<B>(self.config, self.options, device)
    }
}

/// Redraws the run's curves (`RUN_DIR/metrics.png` and `.svg`) after every evaluation,
/// so a run directory always holds a current picture.
pub fn plot_after_eval() -> llm_train::EvalHook {
    llm_train::EvalHook::new(|run_dir| {
        llm_viz::plot_run_dir(run_dir)
            .map(|_| ())
            .map_err(|e| format!("drawing the run's plot: {e}"))
    })
}

/// The recipe a run saved (`RUN_DIR/config.json`), for `--resume` without `--config`.
pub fn saved_recipe(dir: &Path) -> Result<PathBuf> {
    let saved = dir.join("config.json");
    if !saved.is_file() {
        bail!(
            "{} is not a run directory: it has no config.json (pass --config)",
            dir.display()
        );
    }
    Ok(saved)
}

/// A flag that Ctrl-C raises: the first asks the loop to save a checkpoint and stop after
/// the current step; a second one exits at once (the last complete checkpoint stays
/// loadable).
pub fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: saving a checkpoint after this step (press again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Returns false if Ctrl-C stopped the run (a `--stop-at-step` pause counts as success).
pub fn pretrain(args: PretrainArgs) -> Result<bool> {
    let backend: BackendKind = args.backend.parse()?;
    let mut overrides = args.set.clone();
    if let Some(name) = &args.name {
        overrides.push(format!(
            "run.name={}",
            serde_json::Value::String(name.clone())
        ));
    }
    if let Some(n) = args.max_steps {
        overrides.push(format!("schedule.max_steps={n}"));
    }
    let config_path = match (&args.config, &args.resume) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => saved_recipe(dir)?,
        (None, None) => PathBuf::from(DEFAULT_CONFIG),
    };
    let config = TrainConfig::load(&config_path, &overrides)?;
    let run_dir = match (&args.resume, &args.out) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from("runs").join(&config.run.name),
    };
    let stop = stop_on_ctrl_c()?;

    let options = TrainOptions {
        run_dir: run_dir.clone(),
        resume: args.resume.is_some(),
        stop: stop.clone(),
        progress: std::io::stderr().is_terminal(),
        stop_at_step: args.stop_at_step,
        after_eval: Some(crate::pretrain_cmd::plot_after_eval()),
        cluster: args.cluster.cluster(),
    };
    let summary = run_autodiff_on(backend, Job { config, options })??;
    let s = &summary;
    let val = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| {
            format!("{v:.4} (perplexity {:.1})", v.exp())
        })
    };
    println!(
        "{} after {} steps in {:.0} s ({:.0} tokens/s): final train loss {}, val loss {}, best val loss {}",
        match s.outcome {
            Outcome::Finished => "finished",
            Outcome::Interrupted if stop.load(Ordering::SeqCst) => "interrupted",
            Outcome::Interrupted => "paused",
        },
        s.steps,
        s.seconds,
        s.tokens_per_s,
        s.losses.last().map_or("-".into(), |l| format!("{l:.4}")),
        val(s.val_loss),
        val(s.best_val_loss),
    );
    if s.skipped_steps > 0 {
        println!(
            "spike guard: skipped the update of {} step(s) (see \"skipped\" in metrics.jsonl)",
            s.skipped_steps
        );
    }
    if let Some(ckpt) = &s.last_checkpoint {
        println!("checkpoint: {}", ckpt.display());
        println!(
            "  continue:  cargo xtask pretrain --resume {}",
            s.run_dir.display()
        );
        println!(
            "  generate:  cargo xtask generate --model {} --prompt \"ROMEO:\"",
            ckpt.display()
        );
    }
    println!(
        "metrics:    {} (tensorboard --logdir {})",
        s.run_dir.join("metrics.jsonl").display(),
        s.run_dir
            .parent()
            .map_or(s.run_dir.clone(), |p| p.to_path_buf())
            .display()
    );
    Ok(!stop.load(Ordering::SeqCst))
}
