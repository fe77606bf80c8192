//! `llm-serve`: the OpenAI-compatible server alone, without the trainer
//! (`cargo run --release -p llm-infer --bin llm-serve -- --model MODEL`).
//! `cargo xtask serve` runs the same server.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llm_infer::server::{serve, ServeArgs};

#[derive(Parser)]
#[command(
    name = "llm-serve",
    version,
    about = "An OpenAI-compatible server for a GPT-2"
)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

fn main() -> ExitCode {
    llm_model::alloc::keep_freed_memory();
    llm_model::alloc::commit_lazily();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
