//! `download`, `eval` and `export`, and the model flags every command that loads a GPT-2
//! shares.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use llm_bpe::{Allowed, Tokenizer};
use llm_infer::Quant;
use llm_model::backend::{run_on, BackendKind, BackendTask};
use llm_model::hub::Hub;
use llm_model::pretrained::{self, ModelSource};

use llm_model::KernelBackend;

use crate::args::positive;
use crate::tokenizer::read_text;
use llm_infer::load::{check_vocab, load_model};

/// Which model, on which backend, with which tokenizer.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory, a hub id (`gpt2`, `openai-community/gpt2-medium`,
    /// resolved from the local hub cache first), an llm-e2e checkpoint file, or a training
    /// run's directory (its `checkpoints/best.ckpt`, else its newest checkpoint).
    #[arg(long)]
    pub(crate) model: String,
    /// The Burn backend to run on (see `cargo xtask backends`).
    #[arg(long, default_value_t = default_backend())]
    backend: String,
    /// Tokenizer (`gpt2`, a directory or a tokenizer.json); by default the model's own
    /// tokenizer files if it has them, else GPT-2's.
    #[arg(long)]
    tokenizer: Option<String>,
}

pub use llm_infer::server::default_backend;

pub(crate) struct Resolved {
    pub(crate) source: ModelSource,
    pub(crate) tokenizer: Tokenizer,
    /// The tokenizer, as `--tokenizer` takes it.
    pub(crate) tokenizer_name: String,
    pub(crate) template: llm_infer::chat::ChatTemplate,
    pub(crate) backend: BackendKind,
}

pub(crate) fn resolve(args: &ModelArgs) -> Result<Resolved> {
    resolve_model(&args.model, args.tokenizer.as_deref(), &args.backend)
}

/// A `--model` value, its tokenizer (`--tokenizer`, else the model's own) and the backend.
pub(crate) fn resolve_model(
    model: &str,
    tokenizer: Option<&str>,
    backend: &str,
) -> Result<Resolved> {
    let backend: BackendKind = backend.parse()?;
    let located = llm_infer::load::locate(model, tokenizer)?;
    if let Some(note) = &located.note {
        eprintln!("using {note}");
    }
    Ok(Resolved {
        source: located.source,
        tokenizer: located.tokenizer,
        tokenizer_name: located.tokenizer_name,
        template: located.template,
        backend,
    })
}

#[derive(Args)]
pub struct DownloadArgs {
    /// A model's hub id: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, or any `org/name`.
    #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
    model: Option<String>,
    /// A dataset's hub id (`HuggingFaceFW/fineweb-edu`): its Parquet files are fetched.
    #[arg(long)]
    dataset: Option<String>,
    /// With --dataset: the folder to fetch (`sample/10BT`).
    #[arg(long, requires = "dataset")]
    name: Option<String>,
    /// With --dataset: fetch only the first N files (in path order).
    #[arg(long, requires = "dataset")]
    max_files: Option<usize>,
}

pub fn download(args: DownloadArgs) -> Result<()> {
    let Some(model) = &args.model else {
        let repo = args
            .dataset
            .as_deref()
            .expect("clap requires --model or --dataset");
        return crate::data_cmd::download_dataset(repo, args.name.as_deref(), args.max_files);
    };
    let hub = Hub::from_env()?;
    let paths = hub.download(model, true)?;
    for p in &paths {
        println!("{}", p.display());
    }
    println!(
        "{} cached in {} ({} files)",
        model,
        hub.cache_dir().display(),
        paths.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A UTF-8 text file to score.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per window (default: the model's n_positions).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    context: Option<usize>,
    /// Tokens between window starts (default: half the context).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    stride: Option<usize>,
    /// Windows per forward pass (≥ 1).
    #[arg(long, default_value_t = 4, value_parser = positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// Print `{"loss", "perplexity", "tokens", "windows", …}`.
    #[arg(long)]
    json: bool,
    /// Score through the generation engine's layout with these weights: `f32` or `q8`
    /// (int8 Q8_0), to compare the two on the same text; one window at a time. A model
    /// saved by `cargo xtask quantize` is always scored this way.
    #[arg(long)]
    quant: Option<Quant>,
    /// With `--quant q8`: also run the f32 weights and report how often the two agree on
    /// the most likely next token (greedy-token agreement).
    #[arg(long, requires = "quant")]
    agreement: bool,
}

struct EvalTask<'a> {
    args: &'a EvalArgs,
    resolved: &'a Resolved,
    ids: Vec<u32>,
}

impl BackendTask for EvalTask<'_> {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let saved_int8 = matches!(&self.resolved.source,
            ModelSource::HfDir(dir) if llm_infer::quantized::is_quantized_dir(dir));
        let start = std::time::Instant::now();
        let mut agreement = None;
        let (p, context, stride) = if self.args.quant.is_some() || saved_int8 {
            // Through the engine's layout: f32 or int8 weights, one window at a time.
            let model = load_model::<B>(&self.resolved.source, self.args.quant, &device)?;
            check_vocab(&self.resolved.tokenizer, model.vocab_size())?;
            let (context, stride) = self.window(model.n_positions())?;
            if self.args.agreement {
                let f32 = load_model::<B>(&self.resolved.source, Some(Quant::F32), &device)?;
                agreement = Some(model.top1_agreement(&f32, &self.ids, context, stride)?);
            }
            (
                model.perplexity(&self.ids, context, stride)?,
                context,
                stride,
            )
        } else {
            let (model, _) = pretrained::load::<B>(&self.resolved.source, &device)?;
            check_vocab(&self.resolved.tokenizer, model.vocab_size())?;
            let (context, stride) = self.window(model.n_positions())?;
            let p = llm_model::perplexity(
                &model,
                &self.ids,
                context,
                stride,
                self.args.batch_size,
                &device,
            )?;
            (p, context, stride)
        };
        let secs = start.elapsed().as_secs_f64();
        if self.args.json {
            let mut v = serde_json::to_value(&p)?;
            v["context"] = context.into();
            v["stride"] = stride.into();
            v["seconds"] = secs.into();
            if let Some((agree, scored)) = agreement {
                v["top1_agreement"] = (agree as f64 / scored as f64).into();
            }
            println!("{v}");
        } else {
            println!(
                "loss {:.4}  perplexity {:.3}  ({} tokens scored, {} windows of {context} with stride {stride}, {secs:.1}s)",
                p.loss, p.perplexity, p.tokens, p.windows
            );
            if let Some((agree, scored)) = agreement {
                println!(
                    "greedy-token agreement with f32: {:.2}% ({agree} of {scored} positions)",
                    100.0 * agree as f64 / scored as f64
                );
            }
        }
        Ok(())
    }
}

impl EvalTask<'_> {
    /// `(context, stride)`: the flags, checked against the model's context.
    fn window(&self, n_positions: usize) -> Result<(usize, usize)> {
        let context = self.args.context.unwrap_or(n_positions);
        if !(2..=n_positions).contains(&context) {
            bail!("--context must be between 2 and the model's n_positions ({n_positions}), got {context}");
        }
        let stride = self.args.stride.unwrap_or((context / 2).max(1));
        if stride > context {
            bail!("--stride must be at most the context ({context}), got {stride}");
        }
        Ok((context, stride))
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    let text = read_text(&args.file)?;
    let ids = resolved.tokenizer.encode_parallel(&text, Allowed::AsText)?;
    let task = EvalTask {
        args: &args,
        resolved: &resolved,
        ids,
    };
    run_on(resolved.backend, task)?
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Directory to write `config.json` and `model.safetensors` into (Hugging Face layout).
    #[arg(long)]
    out: PathBuf,
    /// Fold LoRA adapters into the weights (`W + A·B·alpha/rank`): a fine-tuning run with
    /// `--lora` saves only adapters, which a Hugging Face directory cannot hold.
    #[arg(long)]
    merge: bool,
}

struct ExportTask<'a> {
    args: &'a ExportArgs,
    resolved: &'a Resolved,
}

impl BackendTask for ExportTask<'_> {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let (mut model, config) = pretrained::load::<B>(&self.resolved.source, &device)?;
        if model.has_lora() {
            if !self.args.merge {
                bail!(
                    "the model carries LoRA adapters: pass --merge to fold them into the weights"
                );
            }
            model = model.merge_lora();
            println!("merged the LoRA adapters into the weights");
        }
        llm_model::weights::save_hf_dir(&model, &config, &self.args.out)?;
        println!("wrote {}", self.args.out.display());
        Ok(())
    }
}

pub fn export(args: ExportArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    run_on(
        resolved.backend,
        ExportTask {
            args: &args,
            resolved: &resolved,
        },
    )?
}
