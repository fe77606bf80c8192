//! `eval-mc`: HellaSwag-style multiple choice — `acc` and `acc_norm` of a model on a
//! JSON-lines file of `{"ctx", "endings", "label"}` items (see `llm_model::mc`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use llm_model::backend::{run_on, BackendTask};
use llm_model::mc::{read_items, score_items, McItem, McSummary};
use llm_model::pretrained;
use llm_model::KernelBackend;

use crate::args::positive;
use crate::model_cmd::{resolve, ModelArgs, Resolved};
use llm_infer::load::check_vocab;

#[derive(Args)]
pub struct EvalMcArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSON-lines file, one item per line: `{"ctx": text, "endings": [texts], "label": i}`
    /// (HellaSwag's `hellaswag_val.jsonl` as it is; other fields are ignored).
    #[arg(long)]
    file: PathBuf,
    /// Score only the first N items.
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    limit: Option<usize>,
    /// Rows (context + one ending) per forward pass.
    #[arg(long, default_value_t = 16, value_parser = positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// Print one JSON object: `acc`, `acc_norm`, `n`, and `items` in input order, each with
    /// `pred`, `pred_norm`, `label`, `losses` (summed per ending) and `mean_losses`.
    #[arg(long)]
    json: bool,
}

struct EvalMcTask<'a> {
    args: &'a EvalMcArgs,
    resolved: &'a Resolved,
    items: Vec<McItem>,
}

impl BackendTask for EvalMcTask<'_> {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let (model, _) = pretrained::load::<B>(&self.resolved.source, &device)?;
        let tok = &self.resolved.tokenizer;
        check_vocab(tok, model.vocab_size())?;
        let start = std::time::Instant::now();
        let scores = score_items(&model, tok, &self.items, self.args.batch_size, &device)
            .with_context(|| format!("scoring {}", self.args.file.display()))?;
        let summary = McSummary::of(&scores);
        if self.args.json {
            let mut v = serde_json::to_value(&summary)?;
            v["items"] = serde_json::to_value(&scores)?;
            println!("{v}");
        } else {
            println!(
                "acc {:.4}  acc_norm {:.4}  ({} items, {:.1}s)",
                summary.acc,
                summary.acc_norm,
                summary.n,
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

pub fn eval_mc(args: EvalMcArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    let mut items = read_items(&args.file)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    run_on(
        resolved.backend,
        EvalMcTask {
            args: &args,
            resolved: &resolved,
            items,
        },
    )?
}
