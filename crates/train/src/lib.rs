//! # llm-train: pre-training and fine-tuning loops
//!
//! Will hold (issue 5 and later), generic over `B: AutodiffBackend`: AdamW with GPT-2's
//! weight-decay groups, warmup + cosine schedule, global-norm clipping, gradient
//! accumulation, periodic eval and samples, experiment tracking (`metrics.jsonl`,
//! TensorBoard), and atomic checkpoints with exact resume; then classification and
//! instruction fine-tuning, LoRA and DPO.
//!
//! Nothing is implemented yet: `cargo xtask pretrain` says so and exits non-zero.
