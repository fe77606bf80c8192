//! # llm-data: from text to training batches
//!
//! Will hold (issue 4), on top of `llm-bpe`:
//! - next-token datasets: the sliding window (`max_length`, `stride`) of the walkthroughs,
//!   batched into Burn tensors with a seeded shuffle and a train/val split;
//! - pre-tokenized, versioned binary shards (`cargo xtask prepare`), memory-mapped and
//!   streamed across many files with bounded memory, with resumable reader state;
//! - the task datasets: Alpaca-style instructions, SMS spam classification, DPO preference
//!   pairs.
//!
//! It stays free of model code. Nothing is implemented yet.
