//! Look inside llm-e2e models and runs.
//!
//! - **Attention** ([`report::analyse`], [`report::write_report`]): one forward pass with
//!   attention probabilities, written as `attention.json`, a heatmap grid per layer
//!   (`layer-L.png`), single heads (`layer-L-head-H.png`), a self-contained interactive
//!   page (`attention.html`) and per-head scores (`summary.json`: entropy, attention sink,
//!   previous-token and induction scores).
//! - **Runs** ([`runs::write_run_plot`]): loss, validation loss, learning rate, gradient
//!   norm and the tasks' measures from `metrics.jsonl`, one or several runs on shared axes,
//!   as PNG and SVG.
//!
//! Text in every picture is drawn with the bundled DejaVu Sans (`assets/fonts/`), never a
//! system font. Every file is written atomically. `cargo xtask viz` is the command line;
//! `docs/viz.md` the guide.

pub mod attention;
mod error;
mod font;
pub mod heatmap;
mod output;
pub mod page;
pub mod report;
pub mod runs;
pub mod summary;

pub use attention::{AttentionFile, HeadMatrix, LayerAttention, LayerChoice, ModelShape};
pub use error::{Result, VizError};
pub use report::{analyse, write_report, AttentionOptions, AttentionReport, Prompt};
pub use runs::{plot_run_dir, write_run_plot, RunMetrics};
pub use summary::{HeadScores, Summary};
