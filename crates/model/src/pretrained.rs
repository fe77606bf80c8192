//! Loading a model named on the command line: a Hugging Face directory, a hub id, an
//! llm-e2e checkpoint, or a training run's directory.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::checkpoint::Checkpoint;
use crate::checkpoint_dir::CheckpointDir;
use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::hub::{self, Hub, CONFIG_FILE, WEIGHT_FILES};
use crate::model::Gpt;
use crate::weights::{load_weights, WeightFile};

/// Where a model's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory in Hugging Face layout: `config.json` and `model.safetensors` or
    /// `pytorch_model.bin` (maybe tokenizer files too).
    HfDir(PathBuf),
    /// An llm-e2e checkpoint file.
    Checkpoint(PathBuf),
}

impl ModelSource {
    /// The directory that may hold tokenizer files next to the weights.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ModelSource::HfDir(d) => Some(d),
            ModelSource::Checkpoint(_) => None,
        }
    }
}

/// Resolves `--model`: an existing path first (a training run's directory, a Hugging Face
/// directory or a checkpoint file), else a hub id looked up in the cache (and downloaded
/// unless offline). A run directory gives its best checkpoint ([`CheckpointDir::preferred`]).
pub fn locate(spec: &str, hub: &Hub) -> Result<ModelSource> {
    let path = Path::new(spec);
    if path.is_dir() {
        let run = CheckpointDir::of_run(path);
        if run.path().is_dir() {
            return match run.preferred()? {
                Some((ckpt, _)) => Ok(ModelSource::Checkpoint(ckpt)),
                None => Err(ModelError::file(
                    path,
                    "a training run without a complete checkpoint in checkpoints/ (give a checkpoint file with --model)",
                )),
            };
        }
        if !path.join(CONFIG_FILE).is_file() {
            return Err(ModelError::file(
                path,
                "not a model directory: expected config.json (a Hugging Face model) or checkpoints/ (a training run)",
            ));
        }
        return Ok(ModelSource::HfDir(path.into()));
    }
    if path.is_file() {
        if Checkpoint::is_checkpoint(path) {
            return Ok(ModelSource::Checkpoint(path.into()));
        }
        return Err(ModelError::file(
            path,
            "not an llm-e2e checkpoint; for Hugging Face weights give the directory holding config.json",
        ));
    }
    if hub::looks_like_repo_id(spec) {
        return Ok(ModelSource::HfDir(hub.model_dir(spec)?));
    }
    Err(ModelError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such model directory or checkpoint",
        ),
    ))
}

/// The weight file of a Hugging Face directory: `model.safetensors`, else `pytorch_model.bin`.
pub fn weights_in(dir: &Path) -> Result<PathBuf> {
    WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ModelError::file(
                dir,
                "no model.safetensors or pytorch_model.bin in this directory",
            )
        })
}

/// Loads a GPT-2 from a Hugging Face directory (see [`load_weights`]: every tensor is
/// checked now, a safetensors file's values are read at first use).
pub fn load_hf_dir<B: Backend>(dir: &Path, device: &B::Device) -> Result<(Gpt<B>, Gpt2Config)> {
    let config = Gpt2Config::from_json_file(dir.join(CONFIG_FILE))?;
    let weights = WeightFile::open(weights_in(dir)?)?;
    Ok((load_weights(&config, &weights, device)?, config))
}

/// Loads whatever `source` names. Weights holding NaN or infinity are an error
/// ([`ModelError::NonFinite`]) naming the file and the tensor.
pub fn load<B: Backend>(source: &ModelSource, device: &B::Device) -> Result<(Gpt<B>, Gpt2Config)> {
    match source {
        // The loader checks every tensor as it finds it (and reads it at first use).
        ModelSource::HfDir(dir) => load_hf_dir(dir, device),
        ModelSource::Checkpoint(path) => load_checkpoint(path, device),
    }
}

fn load_checkpoint<B: Backend>(path: &Path, device: &B::Device) -> Result<(Gpt<B>, Gpt2Config)> {
    let ckpt = Checkpoint::load(path)?;
    let model = match ckpt.lora_base() {
        // Adapters alone: load the base they name, then put them on it.
        Some((base, _)) => {
            let (base, _) = load(&locate(&base.model, &Hub::from_env()?)?, device)?;
            // A base that is itself a LoRA run: its adapters are part of the base.
            let base = if base.has_lora() {
                base.merge_lora()
            } else {
                base
            };
            ckpt.adapted(base, device)
                .map_err(|e| ModelError::file(path, e.to_string()))?
        }
        None => ckpt.model(device)?,
    };
    if let Some(tensor) = model.first_non_finite() {
        return Err(ModelError::NonFinite {
            path: Some(path.into()),
            tensor,
        });
    }
    Ok((model, ckpt.config))
}
