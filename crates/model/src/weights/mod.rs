//! Weights in Hugging Face layout: reading files, mapping keys, loading and exporting.

mod hf;
pub mod llama;
pub mod remap;
mod source;

pub use hf::{f32_safetensors, hf_tensors, load_weights, save_hf_dir};
pub use source::{release_pages, Deferred, WeightFile};
