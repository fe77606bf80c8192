//! # llm-infer: the generation engine
//!
//! Fast generation with a GPT-2 or one of its variants (RoPE, RMSNorm, SwiGLU, MoE,
//! grouped-query and windowed attention: a Llama), on any Burn backend, specialised for
//! the CPU.
//!
//! - [`InferModel`]: the weights laid out for generation (`[out, in]` projections), in f32
//!   or int8 Q8_0 ([`Quant`]), built from an [`llm_model::Gpt`].
//! - [`SlotCache`]: the KV cache, `[slots, n_kv_head, n_positions, head_dim]` per layer,
//!   allocated once and written in place, in f32 or f16 ([`KvDtype`]).
//! - [`Engine`]: continuous batching over the slots ([`Engine::add`], [`Engine::step`],
//!   [`Engine::cancel`]); [`Engine::generate`] runs a list of requests to the end.
//! - [`TokenSampler`] and [`SamplingParams`]: token sampling (greedy, temperature, top-k,
//!   top-p, min-p, repetition / presence / frequency penalties, seeds, log-probabilities),
//!   re-exported from `llm_model::sampling`.
//! - [`quantized`]: the saved int8 model's safetensors layout ([`quantized::save_quantized`],
//!   [`quantized::load_quantized`]).
//! - [`TextStream`]: text pieces that are whole characters and never a stop string's start.
//! - [`load`]: what `--model` names, its tokenizer and recorded chat template, loaded for
//!   the engine; [`chat`]: chat templates (Alpaca for instruction-tuned checkpoints),
//!   re-exported from `llm-bpe`.
//! - `server` (feature `server`, on by default): the OpenAI-compatible HTTP server.
//!
//! The hot ops (`linear_nt`, `linear_q8`, `cached_attention`) are
//! [`llm_model::KernelBackend`] ops: plain Burn ops by default, multi-threaded SIMD
//! kernels on Flex.

mod cache;
mod engine;
mod error;
mod ffn;
pub mod load;
mod model;
pub mod quantized;
#[cfg(feature = "server")]
pub mod server;
mod text;

pub use cache::{KvDtype, SlotCache};
pub use engine::{Engine, Event, Finish, Output, Request, SeqId};
pub use error::{InferError, Result};
pub use ffn::{FeedForward, InferMlp, InferMoe};
pub use llm_bpe::chat;
pub use llm_model::sampling::{argmax, Choice, SamplingParams, TokenSampler};
pub use model::{InferBlock, InferModel, Linear, Quant, Weight};
pub use text::{Piece, TextStream};
