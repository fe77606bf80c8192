//! Loading Hugging Face GPT-2 weights into a [`Gpt`], strictly, and exporting them back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, View};

use super::remap::{self, HfKey};
use super::source::{Deferred, WeightFile};
use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::model::Gpt;

/// Fills every parameter of a freshly built (lazily initialised, so never randomised) model
/// from a weight file, walking the module tree with its paths. Every tensor is checked now
/// (present, shaped as the config says, finite); a memory-mapped file's values are read
/// when the model first uses them.
struct Loader<'a, B: Backend> {
    file: &'a WeightFile,
    /// Our module path → the file's key.
    index: BTreeMap<String, String>,
    path: Vec<String>,
    loaded: BTreeSet<String>,
    errors: Vec<ModelError>,
    device: B::Device,
}

/// A tensor the loader found and checked: read now, or when the model first uses it.
enum Found {
    Values(Vec<f32>),
    Deferred(Deferred),
}

impl<B: Backend> Loader<'_, B> {
    /// Finds and checks the tensor for our parameter `ours` of shape `expected`; returns
    /// it with whether it is stored transposed.
    fn find<const D: usize>(&mut self, ours: &str, expected: [usize; D]) -> Option<(Found, bool)> {
        let Some(key) = self.index.get(ours).cloned() else {
            self.errors.push(ModelError::MissingTensor {
                path: self.file.path().into(),
                name: remap::to_hf(ours),
            });
            return None;
        };
        let found = self.file.shapes()[&key].clone();
        // HF stores an untied head as nn.Linear, [vocab, n_embd]; ours is [n_embd, vocab].
        let transposed = remap::is_transposed(ours);
        let mut want = expected.to_vec();
        if transposed {
            want.reverse();
        }
        if found != want {
            self.errors.push(ModelError::ShapeMismatch {
                path: self.file.path().into(),
                name: key,
                expected: want,
                found,
            });
            return None;
        }
        let values = match self.file.deferred_f32(&key) {
            Ok(Some(deferred)) => Ok(Found::Deferred(deferred)),
            Ok(None) => {
                self.file
                    .read_f32(&key)
                    .and_then(|v| match v.iter().all(|x| x.is_finite()) {
                        true => Ok(Found::Values(v)),
                        false => Err(ModelError::NonFinite {
                            path: Some(self.file.path().into()),
                            tensor: key.clone(),
                        }),
                    })
            }
            Err(e) => Err(e),
        };
        self.loaded.insert(key);
        match values {
            Ok(values) => Some((values, transposed)),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }
}

/// `values` as our parameter of shape `dims`, from the file's layout (transposed or not).
fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    transposed: bool,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut stored = dims;
    if transposed {
        stored.reverse();
    }
    let t = Tensor::<B, D>::from_data(TensorData::new(values, stored), device);
    if transposed {
        t.transpose()
    } else {
        t
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let ours = self.path.join(".");
        let dims: [usize; D] = param.lazy_shape().dims();
        let Some((found, transposed)) = self.find::<D>(&ours, dims) else {
            return param;
        };
        match found {
            Found::Values(values) => {
                let t = tensor(values, dims, transposed, &self.device);
                let id = param.id;
                param.transform_for_load(t, id)
            }
            // Read at first use: checked already, so reading cannot fail.
            Found::Deferred(deferred) => Param::uninitialized(
                param.id,
                move |device, require_grad| {
                    tensor(deferred.read(), dims, transposed, device).set_require_grad(require_grad)
                },
                self.device.clone(),
                true, // trainable, as every placeholder of `init_for_load`
                dims.into(),
            ),
        }
    }
}

/// Loads a GPT-2 from a weight file in Hugging Face layout (`transformer.`-prefixed or the
/// original OpenAI keys). Strict: a missing tensor, a shape that disagrees with `config`, or
/// a tensor that is not part of GPT-2 is an error naming it; only the causal-mask buffers
/// and a tied `lm_head.weight` are skipped.
pub fn load_weights<B: Backend>(
    config: &Gpt2Config,
    file: &WeightFile,
    device: &B::Device,
) -> Result<Gpt<B>> {
    let mut index = BTreeMap::new();
    let mut unexpected = Vec::new();
    for key in file.shapes().keys() {
        match remap::from_hf(key, config.tie_word_embeddings) {
            HfKey::Skip => {}
            HfKey::Param(ours) => {
                if let Some(other) = index.insert(ours.clone(), key.clone()) {
                    return Err(ModelError::file(
                        file.path(),
                        format!("tensors {other:?} and {key:?} are the same parameter {ours:?}"),
                    ));
                }
            }
        }
    }
    let model: Gpt<B> = config.init_for_load(device)?;
    let mut loader = Loader {
        file,
        index,
        path: Vec::new(),
        loaded: BTreeSet::new(),
        errors: Vec::new(),
        device: device.clone(),
    };
    let model = model.map(&mut loader);
    if let Some(first) = loader.errors.into_iter().next() {
        return Err(first);
    }
    for key in loader.index.values() {
        if !loader.loaded.contains(key) {
            unexpected.push(key.clone());
        }
    }
    if !unexpected.is_empty() {
        return Err(ModelError::UnexpectedTensors {
            path: file.path().into(),
            names: unexpected,
        });
    }
    Ok(model)
}

/// Collects every parameter with its Hugging Face key.
struct Exporter {
    path: Vec<String>,
    tensors: Vec<(String, TensorData)>,
}

impl<B: Backend> ModuleVisitor<B> for Exporter {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let ours = self.path.join(".");
        let t = param.val();
        let data = if remap::is_transposed(&ours) {
            t.transpose().into_data()
        } else {
            t.into_data()
        };
        self.tensors
            .push((remap::to_hf(&ours), data.convert::<f32>()));
    }
}

/// Every parameter as `(Hugging Face key, f32 data)`, in module order.
pub fn hf_tensors<B: Backend>(model: &Gpt<B>) -> Vec<(String, TensorData)> {
    let mut exporter = Exporter {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    model.visit(&mut exporter);
    exporter.tensors
}

pub(crate) struct F32View<'a>(pub(crate) &'a TensorData);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.0.as_bytes())
    }
    fn data_len(&self) -> usize {
        self.0.as_bytes().len()
    }
}

/// Writes the model as a Hugging Face model directory: `model.safetensors` (keys as
/// `save_pretrained` writes them, no `lm_head.weight` when tied) and `config.json`.
/// Each file is written to a temporary name and renamed into place.
pub fn save_hf_dir<B: Backend>(model: &Gpt<B>, config: &Gpt2Config, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = hf_tensors(model);
    let views: Vec<(String, F32View)> = tensors
        .iter()
        .map(|(k, d)| (k.clone(), F32View(d)))
        .collect();
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| ModelError::file(dir.join("model.safetensors"), e.to_string()))?;
    crate::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let config_json =
        serde_json::to_string_pretty(&config.to_hf_json()).expect("config serialises");
    crate::write_atomic(&dir.join("config.json"), config_json.as_bytes())?;
    Ok(())
}
