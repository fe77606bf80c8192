//! `cargo xtask <command>`: the llm-e2e command line.
//!
//! Every command returns an error instead of panicking; `main` prints it with its causes and
//! exits non-zero.

mod args;
mod backends;
mod chat_cmd;
mod data_cmd;
mod eval_mc_cmd;
mod finetune_cmd;
mod generate_cmd;
mod model_cmd;
mod pretrain_cmd;
mod sweep_cmd;
mod tokenizer;
mod viz_cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "llm-e2e: GPT-2 from tokenizer to serving"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the token ids of a text.
    Tokenize(tokenizer::TokenizeArgs),
    /// Print the text of token ids.
    Detokenize(tokenizer::DetokenizeArgs),
    /// Train a byte-level BPE vocabulary and save it as tokenizer.json.
    TrainTokenizer(tokenizer::TrainArgs),
    /// Tokenize a corpus into binary shards with a manifest.
    Prepare(data_cmd::PrepareArgs),
    /// Token counts, vocabulary coverage, frequent tokens and sample pairs of a corpus.
    DataStats(data_cmd::StatsArgs),
    /// Download a model, or a dataset's Parquet files, from the Hugging Face hub into the
    /// local cache.
    Download(model_cmd::DownloadArgs),
    /// Continue one or more prompts with a GPT-2 (the llm-infer engine, batched).
    Generate(generate_cmd::GenerateArgs),
    /// Save a model with int8 (Q8_0) weights, to load with `--model DIR`.
    Quantize(generate_cmd::QuantizeArgs),
    /// Mean loss and perplexity of a model on a text file (sliding window).
    Eval(model_cmd::EvalArgs),
    /// Multiple choice, HellaSwag-style: acc and acc_norm of a model on {ctx, endings, label} lines.
    EvalMc(eval_mc_cmd::EvalMcArgs),
    /// Write a model as a Hugging Face directory (config.json + model.safetensors).
    Export(model_cmd::ExportArgs),
    /// List the compiled backends and check each with a matmul.
    Backends(backends::BackendsArgs),
    /// Pre-train a GPT (default: a small GPT on Shakespeare, on the CPU), or continue a run.
    Pretrain(pretrain_cmd::PretrainArgs),
    /// Run a sweep: a base recipe and a list or grid of overrides, one run each; writes sweep.md, sweep.csv and a val-loss plot.
    Sweep(sweep_cmd::SweepArgs),
    /// Fine-tune a trained GPT: classify, instruct or dpo, optionally with LoRA; or continue such a run.
    Finetune(finetune_cmd::FinetuneArgs),
    /// Label texts with a fine-tuned classifier: prints the label and its probability.
    Classify(finetune_cmd::ClassifyArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (see docs/serve.md).
    Serve(llm_infer::server::ServeArgs),
    /// Chat with a model in the terminal, through its chat template.
    Chat(chat_cmd::ChatArgs),
    /// Look inside: `viz attention` (what a model attends to), `viz run` (training curves).
    Viz(viz_cmd::VizArgs),
}

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

fn main() -> ExitCode {
    llm_model::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => tokenizer::tokenize(args),
        Command::Detokenize(args) => tokenizer::detokenize(args),
        Command::TrainTokenizer(args) => tokenizer::train(args),
        Command::Prepare(args) => data_cmd::prepare(args),
        Command::DataStats(args) => data_cmd::stats(args),
        Command::Download(args) => model_cmd::download(args),
        Command::Generate(args) => {
            llm_model::alloc::commit_lazily();
            generate_cmd::generate(args)
        }
        Command::Quantize(args) => generate_cmd::quantize(args),
        Command::Eval(args) => model_cmd::eval(args),
        Command::EvalMc(args) => eval_mc_cmd::eval_mc(args),
        Command::Export(args) => model_cmd::export(args),
        Command::Backends(args) => backends::backends(args),
        Command::Pretrain(args) => match pretrain_cmd::pretrain(args) {
            // Interrupted by Ctrl-C after saving a checkpoint: the shell's SIGINT status.
            Ok(false) => return ExitCode::from(130),
            other => other.map(|_| ()),
        },
        Command::Sweep(args) => sweep_cmd::sweep(args),
        Command::Finetune(args) => match finetune_cmd::finetune(args) {
            Ok(false) => return ExitCode::from(130),
            other => other.map(|_| ()),
        },
        Command::Classify(args) => finetune_cmd::classify(args),
        Command::Serve(args) => {
            llm_model::alloc::commit_lazily();
            chat_cmd::serve(args)
        }
        Command::Chat(args) => {
            llm_model::alloc::commit_lazily();
            chat_cmd::chat(args)
        }
        Command::Viz(args) => viz_cmd::viz(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many errors already end with
/// their cause's text (`{path}: {source}`), which `{:#}` would print twice.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = llm_data::DataError::Io {
            path: "x.txt".into(),
            source: io,
        };
        let e = anyhow::Error::new(e).context("reading the corpus");
        assert_eq!(
            report(&e),
            "reading the corpus: x.txt: No such file or directory"
        );
    }
}
