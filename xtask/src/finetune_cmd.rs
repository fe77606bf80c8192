//! `finetune`: adapt a trained GPT to a task with a recipe from `configs/finetune-*.json`,
//! or continue such a run; `classify`: label texts with a fine-tuned classifier.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use clap::Args;
use llm_model::backend::{run_autodiff_on, run_on, AutodiffTask, BackendTask};
use llm_model::pretrained::{self, ModelSource};
use llm_model::KernelAutodiff;
use llm_model::{Checkpoint, Classifier};
use llm_train::finetune::{self, FinetuneConfig};
use llm_train::{Outcome, Summary, TrainOptions};
use serde_json::{json, Value};

use crate::model_cmd::{resolve_model, Resolved};
use llm_infer::load::check_vocab;

#[derive(Args)]
pub struct FinetuneArgs {
    /// The task: `classify` (spam detection), `instruct` (instruction fine-tuning) or `dpo`
    /// (preference optimisation).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(finetune::TASKS))]
    task: Option<String>,
    /// The model to start from: a checkpoint (`runs/shakespeare-small/checkpoints/best.ckpt`),
    /// a run directory, a Hugging Face directory or a hub id from the cache. With --resume,
    /// the run's own.
    #[arg(long)]
    model: Option<String>,
    /// DPO's reference model (default: a frozen copy of --model).
    #[arg(long)]
    reference: Option<String>,
    /// The recipe (default `configs/finetune-<task>.json`; with --resume, the run's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Change one setting: `--set optimizer.lr=1e-4 --set epochs=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Train LoRA adapters of this rank (and scale numerator alpha, default the rank) on
    /// c_attn, c_proj and c_fc instead of the model's weights.
    #[arg(long, value_name = "RANK[,ALPHA]")]
    lora: Option<String>,
    /// The run directory (default `runs/<run.name>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its newest valid checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Optimizer steps to train for (`schedule.max_steps`, instead of `epochs`); 0 only
    /// evaluates the starting model.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Pause after this many steps (saving a checkpoint); `--resume` continues the run.
    #[arg(long, value_name = "STEP")]
    stop_at_step: Option<usize>,
    /// Print the outcome as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Tokenizer (by default the model's own).
    #[arg(long)]
    tokenizer: Option<String>,
    /// The Burn backend to train on (see `cargo xtask backends`).
    #[arg(long, default_value_t = crate::model_cmd::default_backend())]
    backend: String,
}

/// `RANK[,ALPHA]` as `--set` overrides.
fn lora_overrides(spec: &str) -> Result<Vec<String>> {
    let (rank, alpha) = match spec.split_once(',') {
        Some((r, a)) => (r, Some(a)),
        None => (spec, None),
    };
    let rank: usize =
        rank.trim().parse().ok().filter(|&r| r > 0).ok_or_else(|| {
            anyhow::anyhow!("--lora {spec:?}: the rank must be a whole number ≥ 1")
        })?;
    let mut out = vec![format!("lora.rank={rank}")];
    if let Some(a) = alpha {
        let a: f64 = a
            .trim()
            .parse()
            .ok()
            .filter(|a: &f64| a.is_finite() && *a > 0.0)
            .ok_or_else(|| anyhow::anyhow!("--lora {spec:?}: alpha must be a positive number"))?;
        out.push(format!("lora.alpha={a}"));
    }
    Ok(out)
}

/// The recipe: the file (or the run's saved one), with `--set`, then the flags (which win),
/// as overrides.
fn recipe(args: &FinetuneArgs) -> Result<FinetuneConfig> {
    let mut overrides = args.set.clone();
    if let Some(task) = &args.task {
        overrides.push(format!("task={}", Value::String(task.clone())));
    }
    if let Some(model) = &args.model {
        overrides.push(format!("model={}", Value::String(model.clone())));
    }
    if let Some(reference) = &args.reference {
        overrides.push(format!(
            "dpo.reference={}",
            Value::String(reference.clone())
        ));
    }
    if let Some(spec) = &args.lora {
        overrides.extend(lora_overrides(spec)?);
    }
    if let Some(n) = args.max_steps {
        overrides.push(format!("schedule.max_steps={n}"));
        overrides.push("epochs=null".into());
    }
    let path = match (&args.config, &args.resume, &args.task) {
        (Some(path), _, _) => path.clone(),
        (None, Some(dir), _) => crate::pretrain_cmd::saved_recipe(dir)?,
        (None, None, Some(task)) => PathBuf::from(format!("configs/finetune-{task}.json")),
        (None, None, None) => bail!("say which task: --task {}", finetune::TASKS.join("|")),
    };
    Ok(FinetuneConfig::load(&path, &overrides)?)
}

struct Job {
    recipe: FinetuneConfig,
    resolved: Resolved,
    reference: Option<Resolved>,
    options: TrainOptions,
}

impl AutodiffTask for Job {
    type Output = Result<Summary>;

    fn run<B: KernelAutodiff>(self, device: B::Device) -> Result<Summary> {
        let (base, _) = pretrained::load::<B>(&self.resolved.source, &device)?;
        let reference = match &self.reference {
            Some(r) => Some(pretrained::load::<B::InnerBackend>(&r.source, &device)?.0),
            None => None,
        };
        let r = &self.resolved;
        Ok(finetune::finetune::<B>(
            self.recipe,
            base,
            reference,
            &r.tokenizer,
            &r.tokenizer_name,
            self.options,
            device,
        )?)
    }
}

/// Returns false if Ctrl-C stopped the run.
pub fn finetune(args: FinetuneArgs) -> Result<bool> {
    let recipe = recipe(&args)?;
    let resolved = resolve_model(&recipe.model, args.tokenizer.as_deref(), &args.backend)?;
    let reference = match (recipe.task.as_str(), &recipe.dpo.reference) {
        ("dpo", Some(spec)) => Some(resolve_model(
            spec,
            args.tokenizer.as_deref(),
            &args.backend,
        )?),
        _ => None,
    };
    let run_dir = match (&args.resume, &args.out) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from("runs").join(&recipe.run.name),
    };
    let stop = crate::pretrain_cmd::stop_on_ctrl_c()?;
    let options = TrainOptions {
        run_dir,
        resume: args.resume.is_some(),
        stop: stop.clone(),
        progress: std::io::stderr().is_terminal(),
        stop_at_step: args.stop_at_step,
        after_eval: Some(crate::pretrain_cmd::plot_after_eval()),
        cluster: Default::default(),
    };
    let task = recipe.task.clone();
    let backend = resolved.backend;
    let summary = run_autodiff_on(
        backend,
        Job {
            recipe,
            resolved,
            reference,
            options,
        },
    )??;
    report(&task, &summary, args.json, stop.load(Ordering::SeqCst));
    Ok(!stop.load(Ordering::SeqCst))
}

fn report(task: &str, s: &Summary, as_json: bool, stopped: bool) {
    let state = match s.outcome {
        Outcome::Finished => "finished",
        Outcome::Interrupted if stopped => "interrupted",
        Outcome::Interrupted => "paused",
    };
    println!(
        "{task}: {state} after {} steps in {:.0} s; {} of {} parameters trained",
        s.steps, s.seconds, s.trainable_params, s.total_params
    );
    let measures = if s.final_metrics.is_empty() {
        &s.val_metrics
    } else {
        &s.final_metrics
    };
    for (name, v) in measures {
        println!("  {name:<16} {v:.4}");
    }
    if let Some(ckpt) = &s.last_checkpoint {
        println!("checkpoint: {}", ckpt.display());
    }
    if as_json {
        let mut out = json!({
            "task": task,
            "steps": s.steps,
            "run_dir": s.run_dir,
            "trainable_params": s.trainable_params,
            "total_params": s.total_params,
        });
        if let Some(v) = s.val_loss {
            out["val_loss"] = json!(v);
        }
        for (name, v) in s.val_metrics.iter().chain(&s.final_metrics) {
            out[name] = json!(v);
        }
        println!("{out}");
    }
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// A classification run's directory or one of its checkpoints.
    #[arg(long)]
    model: String,
    /// The text to label (repeat for several).
    #[arg(long, required = true)]
    text: Vec<String>,
    /// Print `[{"text", "label", "probability"}]` instead of lines.
    #[arg(long)]
    json: bool,
    /// The Burn backend to run on.
    #[arg(long, default_value_t = crate::model_cmd::default_backend())]
    backend: String,
}

struct ClassifyJob<'a> {
    args: &'a ClassifyArgs,
    resolved: &'a Resolved,
    checkpoint: Checkpoint,
}

impl BackendTask for ClassifyJob<'_> {
    type Output = Result<Vec<(String, f64)>>;

    fn run<B: llm_model::KernelBackend>(self, device: B::Device) -> Self::Output {
        let (gpt, _) = pretrained::load::<B>(&self.resolved.source, &device)?;
        let (model, info) = Classifier::from_checkpoint(gpt, &self.checkpoint, &device)?;
        let tok = &self.resolved.tokenizer;
        check_vocab(tok, model.gpt.vocab_size())?;
        Ok(finetune::predict(
            &model,
            &info,
            tok,
            &self.args.text,
            &device,
        )?)
    }
}

pub fn classify(args: ClassifyArgs) -> Result<()> {
    let resolved = resolve_model(&args.model, None, &args.backend)?;
    let ModelSource::Checkpoint(path) = &resolved.source else {
        bail!(
            "{} is not a classifier: give a `finetune --task classify` run or checkpoint",
            args.model
        );
    };
    let checkpoint = Checkpoint::load(path)?;
    if checkpoint.metadata.get("classifier").is_none() {
        bail!(
            "{} is not a classifier checkpoint (it has no classification head): fine-tune one with `cargo xtask finetune --task classify`",
            path.display()
        );
    }
    let labels = run_on(
        resolved.backend,
        ClassifyJob {
            args: &args,
            resolved: &resolved,
            checkpoint,
        },
    )??;
    if args.json {
        let rows: Vec<Value> = args
            .text
            .iter()
            .zip(&labels)
            .map(|(t, (l, p))| json!({"text": t, "label": l, "probability": p}))
            .collect();
        println!("{}", Value::Array(rows));
    } else {
        for (label, p) in &labels {
            println!("{label} {p:.4}");
        }
    }
    Ok(())
}
