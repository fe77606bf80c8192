//! # llm-data: from text to training batches
//!
//! Everything between a tokenizer and a model. It depends on `llm-bpe` and Burn's tensor
//! types, never on model code.
//!
//! - **Next-token datasets**
//!   - [`SlidingWindow`]: the walkthrough's `(max_length, stride)` windows over one token
//!     stream; [`TokenPair`] items (input, input shifted by one).
//!   - [`DataLoader`]: batches through a Burn [`Batcher`](burn::data::dataloader::batcher::Batcher)
//!     ([`NextTokenBatcher`] → [`NextTokenBatch`]), seeded shuffle, `drop_last`, resumable
//!     [`LoaderState`]; [`split_tokens`] for a train/val split by fraction.
//! - **Pre-tokenized shards** (for corpora of any size)
//!   - [`prepare()`]: `.txt` / `.jsonl` (optionally gzipped) and `.parquet` ([`parquet`],
//!     streamed a few hundred rows at a time) → versioned binary shards in llm.c's format
//!     (u16 or u32 tokens) + `manifest.json` with checksums; parallel, byte-identical on
//!     every run.
//!   - [`hub`]: a dataset's Parquet files downloaded into the Hugging Face cache (resumed,
//!     size-checked), and `hf://datasets/ORG/NAME[/SUBDIR]` resolved to them.
//!   - [`ShardSet`] + [`TokenBatches`]: memory-mapped reading under a memory budget, random
//!     windows (nanoGPT) or sequential (llm.c), resumable through [`BatchState`].
//! - **Task datasets**
//!   - [`instruct`]: Alpaca instructions, the prompt template, collate with −100 targets,
//!     prompt masking, the seeded 85/5/10 split.
//!   - [`spam`]: SMS spam classification, balanced and split 70/10/20, padded batches.
//!   - [`dpo`]: preference pairs with response masks.
//! - [`text`]: reading corpora with errors that name the file, line and byte.
//! - [`TokenStats`]: counts for `cargo xtask data-stats`.

mod batcher;
pub mod dpo;
mod error;
pub mod hub;
pub mod instruct;
mod loader;
pub mod parquet;
mod prepare;
mod reader;
pub mod shard;
pub mod spam;
mod split;
mod stats;
pub mod text;
mod window;

pub use batcher::{int_tensor, NextTokenBatch, NextTokenBatcher};
pub use error::{DataError, Result};
pub use loader::{DataLoader, LoaderConfig, LoaderState};
pub use prepare::{
    input_list, prepare, Manifest, PrepareConfig, PrepareReport, ShardEntry, SplitEntry,
    TokenizerEntry, DOC_SPLIT_MIN_DOCS,
};
pub use reader::{BatchOrder, BatchState, ShardSet, TokenBatches, DEFAULT_MAX_MAPPED_BYTES};
pub use split::{seeded_split, split_tokens};
pub use stats::TokenStats;
pub use window::{SlidingWindow, TokenPair};
