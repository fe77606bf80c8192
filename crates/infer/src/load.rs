//! Finding and loading a model to generate with: what `--model` names, the tokenizer
//! that goes with it, and the chat template its checkpoint recorded.

use std::path::Path;

use llm_bpe::Tokenizer;
use llm_model::hub::Hub;
use llm_model::pretrained::{self, ModelSource};
use llm_model::{Checkpoint, KernelBackend};

use crate::chat::ChatTemplate;
use crate::error::{InferError, Result};
use crate::model::{InferModel, Quant};
use crate::quantized;

/// A model found on disk (or in the hub cache), not loaded yet.
pub struct LocatedModel {
    pub source: ModelSource,
    pub tokenizer: Tokenizer,
    /// The tokenizer, as `--tokenizer` takes it.
    pub tokenizer_name: String,
    /// The chat template the checkpoint recorded, else [`ChatTemplate::Plain`].
    pub template: ChatTemplate,
    /// `path (step N, best validation loss L)` when `model` named a training run.
    pub note: Option<String>,
}

/// Resolves a `--model` value (a Hugging Face directory, a hub id, a checkpoint file or a
/// training run's directory) and its tokenizer: `tokenizer` if given, else the model's own
/// tokenizer files or the one its checkpoint names, else GPT-2's.
pub fn locate(model: &str, tokenizer: Option<&str>) -> Result<LocatedModel> {
    let hub = Hub::from_env()?;
    let source = pretrained::locate(model, &hub)?;
    let (metadata, step) = match &source {
        ModelSource::Checkpoint(path) => {
            let info = Checkpoint::inspect(path)?;
            (Some(info.metadata.clone()), info.step())
        }
        ModelSource::HfDir(dir) => (hf_config(dir), None),
    };
    let recorded = |key: &str| metadata.as_ref().and_then(|m| m[key].as_str());
    let spec = match (tokenizer, &source) {
        (Some(spec), _) => spec.to_string(),
        (None, ModelSource::HfDir(dir))
            if dir.join("tokenizer.json").is_file() || dir.join("vocab.json").is_file() =>
        {
            dir.display().to_string()
        }
        _ => recorded("tokenizer").unwrap_or("gpt2").to_string(),
    };
    let tokenizer = Tokenizer::load(&spec)
        .map_err(|e| InferError::Load(format!("loading the model's tokenizer {spec:?}: {e}")))?;
    let note = match (&source, Path::new(model).is_dir()) {
        (ModelSource::Checkpoint(path), true) => Some(describe_checkpoint(path, step, &metadata)),
        _ => None,
    };
    Ok(LocatedModel {
        template: ChatTemplate::from_recorded(recorded("prompt_template")),
        source,
        tokenizer_name: spec,
        tokenizer,
        note,
    })
}

/// An HF directory's `config.json`, which may record `prompt_template` too.
fn hf_config(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// `path (step N, best validation loss L)`, from the checkpoint's header.
fn describe_checkpoint(
    path: &Path,
    step: Option<usize>,
    metadata: &Option<serde_json::Value>,
) -> String {
    let mut facts = Vec::new();
    if let Some(step) = step {
        facts.push(format!("step {step}"));
    }
    if let Some(v) = metadata.as_ref().and_then(|m| m["best_val_loss"].as_f64()) {
        facts.push(format!("best validation loss {v:.4}"));
    }
    match facts.is_empty() {
        true => path.display().to_string(),
        false => format!("{} ({})", path.display(), facts.join(", ")),
    }
}

/// The model laid out for the engine: a saved int8 model as it is, any other quantized at
/// load if `quant` asks (f32 by default).
pub fn load_model<B: KernelBackend>(
    source: &ModelSource,
    quant: Option<Quant>,
    device: &B::Device,
) -> Result<InferModel<B>> {
    if let ModelSource::HfDir(dir) = source {
        if quantized::is_quantized_dir(dir) {
            if quant == Some(Quant::F32) {
                return Err(InferError::Load(format!(
                    "{} holds int8 weights (cargo xtask quantize): --quant f32 cannot restore them; use the model it was quantized from",
                    dir.display()
                )));
            }
            return quantized::load_quantized(dir, device);
        }
    }
    let (gpt, _) = pretrained::load::<B>(source, device)?;
    Ok(InferModel::from_gpt(gpt, quant.unwrap_or_default()))
}

/// Checks that every id the tokenizer can produce is a token of the model.
pub fn check_vocab(tokenizer: &Tokenizer, model_vocab: usize) -> Result<()> {
    if tokenizer.vocab_size() > model_vocab {
        return Err(InferError::Load(format!(
            "the tokenizer ({}) has {} tokens but the model only {}: pass the model's tokenizer with --tokenizer",
            tokenizer.name(),
            tokenizer.vocab_size(),
            model_vocab
        )));
    }
    Ok(())
}
