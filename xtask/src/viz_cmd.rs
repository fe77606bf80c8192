//! `viz attention` and `viz run`: the llm-viz pictures from the command line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use llm_model::backend::{run_on, BackendTask};
use llm_model::pretrained;
use llm_model::KernelBackend;
use llm_viz::{AttentionOptions, LayerChoice, Prompt};

use crate::model_cmd::{resolve, ModelArgs, Resolved};

#[derive(Args)]
pub struct VizArgs {
    #[command(subcommand)]
    command: VizCommand,
}

#[derive(Subcommand)]
enum VizCommand {
    /// What a model attends to: attention.json, heatmaps, an offline page and head scores.
    Attention(AttentionArgs),
    /// Training curves of one or several runs on shared axes (PNG and SVG).
    Run(RunArgs),
}

#[derive(Args)]
struct AttentionArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to look at (`<|endoftext|>` is the special token). Longer than the model's
    /// context (n_positions tokens) is an error.
    #[arg(long, required_unless_present = "prompt_ids")]
    text: Option<String>,
    /// Token ids instead of text: `--prompt-ids 464,3869,16622`.
    #[arg(long, conflicts_with = "text")]
    prompt_ids: Option<String>,
    /// A layer index (negative counts from the end: -1 is the last) or `all`. Default: the
    /// second-to-last layer (-2), or the only one.
    #[arg(long, allow_hyphen_values = true)]
    layer: Option<String>,
    /// Heads to write, `0,3,7` (default: all).
    #[arg(long, value_delimiter = ',')]
    heads: Vec<usize>,
    /// The page shows at most this many tokens (the first ones); attention.json has all.
    #[arg(long, default_value_t = llm_viz::page::PAGE_TOKENS)]
    page_tokens: usize,
    /// Seed of the induction probe's random tokens.
    #[arg(long, default_value_t = 0)]
    induction_seed: u64,
    /// The output directory.
    #[arg(long, default_value = "viz")]
    out: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// The PNG to write (an SVG of the same name goes beside it). Default: RUN/metrics.png
    /// for one run, compare.png beside the first run for several.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn viz(args: VizArgs) -> Result<()> {
    match args.command {
        VizCommand::Attention(args) => attention(args),
        VizCommand::Run(args) => run(args),
    }
}

fn attention(args: AttentionArgs) -> Result<()> {
    if args.page_tokens == 0 {
        bail!("--page-tokens must be at least 1");
    }
    let prompt = match (&args.text, &args.prompt_ids) {
        (Some(text), _) => Prompt::Text(text.clone()),
        (None, Some(ids)) => Prompt::Ids(crate::tokenizer::parse_ids("--prompt-ids", ids)?),
        (None, None) => bail!("give --text or --prompt-ids"),
    };
    let options = AttentionOptions {
        layer: match &args.layer {
            Some(layer) => layer.parse::<LayerChoice>()?,
            None => LayerChoice::default(),
        },
        heads: args.heads.clone(),
        page_tokens: args.page_tokens,
        induction_seed: args.induction_seed,
    };
    let resolved = resolve(&args.model)?;
    let task = AttentionTask {
        name: &args.model.model,
        resolved: &resolved,
        prompt,
        options,
        out: &args.out,
    };
    let written = run_on(resolved.backend, task)??;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

struct AttentionTask<'a> {
    name: &'a str,
    resolved: &'a Resolved,
    prompt: Prompt,
    options: AttentionOptions,
    out: &'a PathBuf,
}

impl BackendTask for AttentionTask<'_> {
    type Output = Result<Vec<PathBuf>>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<Vec<PathBuf>> {
        let (model, _) = pretrained::load::<B>(&self.resolved.source, &device)?;
        let tokenizer = &self.resolved.tokenizer;
        llm_infer::load::check_vocab(tokenizer, model.vocab_size())?;
        let report = llm_viz::analyse(
            &model,
            tokenizer,
            self.name,
            &self.prompt,
            &self.options,
            &device,
        )?;
        Ok(llm_viz::write_report(
            &report,
            self.out,
            self.options.page_tokens,
        )?)
    }
}

fn run(args: RunArgs) -> Result<()> {
    let out = match (&args.out, args.run_dirs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join("metrics.png"),
        (None, [first, ..]) => first.parent().unwrap_or(first).join("compare.png"),
        (None, []) => bail!("give at least one run directory"),
    };
    for path in llm_viz::write_run_plot(&args.run_dirs, &out)? {
        println!("{}", path.display());
    }
    Ok(())
}
