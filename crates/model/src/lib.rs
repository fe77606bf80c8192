//! # llm-model: GPT-2 in Burn
//!
//! GPT-2 exactly as OpenAI built it, generic over the Burn backend `B`, proven against
//! Hugging Face transformers on a reference fixture (`tests/parity.rs`).
//!
//! - [`Gpt2Config`]: the shape, with HF `config.json` names and the presets `gpt2` (124M),
//!   `gpt2-medium`, `gpt2-large`, `gpt2-xl`, plus `tiny`, `mini`, `small` for CPUs; and the
//!   architecture variants: [`Position`] (learned, RoPE, none), [`NormKind`] (LayerNorm,
//!   RMSNorm), [`MlpKind`] (GELU, SwiGLU, a mixture of experts), grouped-query and
//!   sliding-window attention, biases and tied embeddings. GPT-2 is the default.
//! - [`Gpt`]: the model, its modules named after GPT-2's weights (`wte`, `wpe`,
//!   `h[i].{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_f`); built by
//!   [`Gpt2Config::init`] with GPT-2's initialisation.
//!   - [`Gpt::forward`] → logits; [`Gpt::forward_with`] with a [`KvCache`], attention
//!     probabilities, or last-position-only logits.
//!   - [`Gpt::forward_hidden`]: the final hidden states (after `ln_f`), for other heads
//!     such as [`Classifier`].
//!   - [`cross_entropy`]: the loss, with PyTorch's `ignore_index = -100`, on the fused
//!     [`token_nll`] op ([`kernels`]: ops llm-e2e adds to Burn's backends).
//! - [`Proj`]: every projection (`c_attn`, `c_proj`, `c_fc`, an untied `lm_head`), each
//!   able to carry a LoRA adapter; [`Gpt::with_lora`] adapts the [`LORA_TARGETS`],
//!   [`Gpt::merge_lora`] folds them back; [`adapters`] saves adapters alone, on a
//!   fingerprinted base.
//! - [`perplexity`]: sliding-window loss and perplexity over a long text; [`mc`]:
//!   HellaSwag-style multiple choice (`acc`, `acc_norm`), batched.
//! - [`generate()`]: a simple generation loop with the KV cache; [`TokenSampler`] and
//!   [`SamplingParams`] choose tokens (greedy, temperature, top-k, top-p, min-p, penalties,
//!   seeded), here and in `llm-infer`'s engine.
//! - Weights: [`weights::load_weights`] (strict, both HF key layouts, safetensors and
//!   `pytorch_model.bin`), [`weights::save_hf_dir`] (export), [`Checkpoint`] (our format,
//!   SHA-256 per section, verified on load), [`CheckpointDir`] (a run's checkpoints: the
//!   newest valid one, damaged ones set aside), [`hub::Hub`] (the Hugging Face cache and
//!   downloads), [`pretrained`] (`--model` values: directories, hub ids, checkpoints, runs).
//!   Weights holding NaN or infinity are never saved ([`Checkpoint::from_model`]) and
//!   never used by [`pretrained::load`] ([`Gpt::first_non_finite`]).
//! - [`backend`]: the one place where Cargo features become Burn backend types.
//!
//! ```
//! use burn::backend::Flex;
//! use llm_model::{Gpt2Config, GenerateConfig, generate};
//!
//! let device = Default::default();
//! let model = Gpt2Config::tiny().init::<Flex>(&device).unwrap();
//! let ids = model.tokens(&[&[6109, 3626, 6100, 345]], &device).unwrap();
//! let logits = model.forward(ids); // [1, 4, 50257]
//! assert_eq!(logits.dims(), [1, 4, 50257]);
//! let config = GenerateConfig { max_new_tokens: 5, ..Default::default() };
//! let new = generate(&model, &[6109, 3626], &config, &device, |_| {}).unwrap();
//! assert_eq!(new.len(), 5);
//! ```

pub mod adapters;
pub mod alloc;
mod attention;
pub mod backend;
mod cache;
mod checkpoint;
mod checkpoint_dir;
mod classifier;
mod config;
mod dropout;
mod error;
mod eval;
mod generate;
pub mod hub;
pub mod kernels;
pub mod llama_config;
mod loss;
pub mod mc;
mod mlp;
mod model;
mod moe;
mod norm;
pub mod pretrained;
mod proj;
mod rope;
pub mod sampling;
pub mod weights;

pub use attention::Attention;
pub use cache::{KvCache, LayerCache};
pub use checkpoint::{Checkpoint, CheckpointInfo};
pub use checkpoint_dir::{CheckpointDir, SetAside};
pub use classifier::{Classifier, ClassifierInfo};
pub use config::{Gpt2Config, MlpKind, NormKind, Position, PRESETS};
pub use dropout::dropout;
pub use error::{ModelError, Result};
pub use eval::{perplexity, windows, Perplexity, Window};
pub use generate::{generate, generate_uncached, GenerateConfig};
pub use kernels::{KernelAutodiff, KernelBackend, Q8Matrix, Segment};
pub use loss::{
    cross_entropy, head_nll, lm_cross_entropy, lm_losses, lm_training_loss, next_token_nll,
    token_nll, IGNORE_INDEX,
};
pub use mlp::{gelu_tanh, Mlp};
pub use model::{Block, ForwardOptions, ForwardOutput, Gpt};
pub use moe::{load_balancing_loss, Moe};
pub use norm::Norm;
pub use proj::{Lora, LoraConfig, Proj, LORA_TARGETS};
pub use rope::Rope;
pub use sampling::{argmax, Choice, SamplingParams, TokenSampler};

/// Writes a file atomically (temporary file + rename), with the error naming the file.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    llm_common::fs::atomic_write(path, bytes).map_err(|e| ModelError::io(path, e))
}
