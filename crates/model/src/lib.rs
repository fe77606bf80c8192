//! # llm-model: GPT-2 in Burn
//!
//! Will hold (issue 3) GPT-2 exactly as OpenAI built it, generic over `B: Backend`: the config
//! with named presets, the modules named after GPT-2's own weights (`wte`, `wpe`, `h[i].ln_1`,
//! `attn.c_attn`, `mlp.c_fc`, `ln_f`, …), the forward pass and loss, the KV cache, a simple
//! `generate`, and loading and saving Hugging Face weights.
//!
//! Today it holds [`backend`]: the single place where the Cargo features `flex` (default),
//! `ndarray`, `wgpu` and `cuda` become concrete Burn backend types, used by every crate
//! above this one.

pub mod backend;
