//! Weights in Hugging Face layout: reading files, mapping keys, loading and exporting.

mod hf;
pub mod remap;
mod source;

pub(crate) use hf::F32View;
pub use hf::{hf_tensors, load_weights, save_hf_dir};
pub use source::{release_pages, Deferred, WeightFile};
