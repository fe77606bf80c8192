//! Loading Hugging Face weights (GPT-2's layout, or the Llama family's) into a [`Gpt`],
//! strictly, and exporting them back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, View};

use super::llama::{self, Parts};
use super::remap::{self, HfKey};
use super::source::{Deferred, WeightFile};
use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::llama_config::is_llama_family;
use crate::model::Gpt;

/// Fills every parameter of a freshly built (lazily initialised, so never randomised) model
/// from a weight file, walking the module tree with its paths. Every tensor is checked now
/// (present, shaped as the config says, finite); a memory-mapped file's values are read
/// when the model first uses them.
struct Loader<'a, B: Backend> {
    file: &'a WeightFile,
    layout: Layout<'a>,
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

/// How a file's keys map to our parameters.
enum Layout<'a> {
    /// GPT-2's keys: our module path → the file's key.
    Gpt2(BTreeMap<String, String>),
    /// The Llama family's keys ([`llama`]), for this config.
    Llama(&'a Gpt2Config),
}

impl Layout<'_> {
    /// The file's tensors that make our parameter `ours` (its last dimension `width`).
    fn parts(&self, ours: &str, width: usize) -> Option<Parts> {
        match self {
            Layout::Gpt2(index) => index.get(ours).map(|key| Parts {
                keys: vec![(key.clone(), width)],
                transposed: remap::is_transposed(ours),
            }),
            Layout::Llama(config) => llama::parts(ours, config),
        }
    }

    /// The file's key for our parameter, for messages.
    fn name(&self, ours: &str) -> String {
        match self {
            Layout::Gpt2(_) => remap::to_hf(ours),
            Layout::Llama(config) => llama::parts(ours, config)
                .and_then(|p| p.keys.first().map(|k| k.0.clone()))
                .unwrap_or_else(|| ours.to_string()),
        }
    }
}

impl<B: Backend> Loader<'_, B> {
    /// Finds and checks the tensors for our parameter `ours` of shape `expected`; returns
    /// them with whether they are stored transposed.
    fn find<const D: usize>(&mut self, ours: &str, expected: [usize; D]) -> Option<(Found, bool)> {
        let width = expected[D - 1];
        let parts = self.layout.parts(ours, width);
        let missing = match &parts {
            None => Some(self.layout.name(ours)),
            Some(p) => p
                .keys
                .iter()
                .find(|(k, _)| !self.file.shapes().contains_key(k))
                .map(|k| k.0.clone()),
        };
        if let Some(name) = missing {
            self.errors.push(ModelError::MissingTensor {
                path: self.file.path().into(),
                name,
            });
            return None;
        }
        let parts = parts.expect("checked above");
        for (key, width) in &parts.keys {
            let mut want = expected.to_vec();
            want[D - 1] = *width;
            if parts.transposed {
                want.reverse();
            }
            let found = self.file.shapes()[key].clone();
            if found != want {
                self.errors.push(ModelError::ShapeMismatch {
                    path: self.file.path().into(),
                    name: key.clone(),
                    expected: want,
                    found,
                });
                return None;
            }
        }
        let found = match parts.keys.as_slice() {
            [(key, _)] => self.read_one(key),
            _ => self
                .read_side_by_side(&parts, expected[0])
                .map(Found::Values),
        };
        for (key, _) in &parts.keys {
            self.loaded.insert(key.clone());
        }
        // Side-by-side parts are assembled in our layout already.
        let transposed = parts.transposed && parts.keys.len() == 1;
        match found {
            Ok(values) => Some((values, transposed)),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// One tensor: deferred when the file is memory-mapped f32, else read and checked now.
    fn read_one(&self, key: &str) -> Result<Found> {
        match self.file.deferred_f32(key)? {
            Some(deferred) => Ok(Found::Deferred(deferred)),
            None => self.read_finite(key).map(Found::Values),
        }
    }

    fn read_finite(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.file.read_f32(key)?;
        match v.iter().all(|x| x.is_finite()) {
            true => Ok(v),
            false => Err(ModelError::NonFinite {
                path: Some(self.file.path().into()),
                tensor: key.to_string(),
            }),
        }
    }

    /// Several tensors side by side along our last dimension, in our layout: `rows` rows of
    /// a matrix (each part `[width, rows]` when transposed), or one vector.
    fn read_side_by_side(&self, parts: &Parts, rows: usize) -> Result<Vec<f32>> {
        let values: Vec<Vec<f32>> = (parts.keys.iter())
            .map(|(k, _)| self.read_finite(k))
            .collect::<Result<_>>()?;
        if !parts.transposed {
            return Ok(values.concat());
        }
        let out: usize = parts.keys.iter().map(|(_, w)| w).sum();
        let mut joined = vec![0f32; rows * out];
        let mut offset = 0;
        for ((_, width), part) in parts.keys.iter().zip(&values) {
            for c in 0..*width {
                for r in 0..rows {
                    joined[r * out + offset + c] = part[c * rows + r]; // part is [width, rows]
                }
            }
            offset += width;
        }
        Ok(joined)
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

/// Loads a model from a weight file in Hugging Face layout: GPT-2's (`transformer.`-prefixed
/// or the original OpenAI keys) or the Llama family's ([`llama`], for a Llama-family
/// `config`). Strict: a missing tensor, a shape that disagrees with `config`, or a tensor
/// that is not part of the model is an error naming it; only the causal-mask and rotary
/// buffers and a tied `lm_head.weight` are skipped.
pub fn load_weights<B: Backend>(
    config: &Gpt2Config,
    file: &WeightFile,
    device: &B::Device,
) -> Result<Gpt<B>> {
    let layout = match llama::is_llama_layout(file.shapes().keys()) {
        true => Layout::Llama(config),
        false => Layout::Gpt2(gpt2_index(config, file)?),
    };
    let model: Gpt<B> = config.init_for_load(device)?;
    let mut loader = Loader {
        file,
        layout,
        path: Vec::new(),
        loaded: BTreeSet::new(),
        errors: Vec::new(),
        device: device.clone(),
    };
    let model = model.map(&mut loader);
    if let Some(first) = loader.errors.into_iter().next() {
        return Err(first);
    }
    let skipped = |k: &str| match loader.layout {
        Layout::Gpt2(_) => remap::from_hf(k, config.tie_word_embeddings) == HfKey::Skip,
        Layout::Llama(_) => {
            llama::is_skipped(k) || (config.tie_word_embeddings && k == "lm_head.weight")
        }
    };
    let unexpected: Vec<String> = (file.shapes().keys())
        .filter(|k| !loader.loaded.contains(*k) && !skipped(k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(ModelError::UnexpectedTensors {
            path: file.path().into(),
            names: unexpected,
        });
    }
    Ok(model)
}

/// GPT-2's keys: our module path → the file's key (either layout, prefixed or not).
fn gpt2_index(config: &Gpt2Config, file: &WeightFile) -> Result<BTreeMap<String, String>> {
    let mut index = BTreeMap::new();
    for key in file.shapes().keys() {
        if let HfKey::Param(ours) = remap::from_hf(key, config.tie_word_embeddings) {
            if let Some(other) = index.insert(ours.clone(), key.clone()) {
                return Err(ModelError::file(
                    file.path(),
                    format!("tensors {other:?} and {key:?} are the same parameter {ours:?}"),
                ));
            }
        }
    }
    Ok(index)
}

/// Collects every parameter with its Hugging Face key(s).
struct Exporter<'a> {
    /// `None`: GPT-2's keys.
    llama: Option<&'a Gpt2Config>,
    path: Vec<String>,
    tensors: Vec<(String, TensorData)>,
}

impl<B: Backend> ModuleVisitor<B> for Exporter<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let ours = self.path.join(".");
        let t = param.val();
        let parts = match self.llama {
            Some(config) => llama::parts(&ours, config).expect("every parameter has a Llama key"),
            None => Parts {
                keys: vec![(remap::to_hf(&ours), t.dims()[D - 1])],
                transposed: remap::is_transposed(&ours),
            },
        };
        let mut offset = 0;
        for (key, width) in parts.keys {
            let part = t.clone().narrow(D - 1, offset, width);
            offset += width;
            let data = match parts.transposed {
                true => part.transpose().into_data(),
                false => part.into_data(),
            };
            self.tensors.push((key, data.convert::<f32>()));
        }
    }
}

/// Every parameter as `(Hugging Face key, f32 data)`, in module order: GPT-2's keys, or the
/// Llama family's for a Llama-family model ([`crate::llama_config::is_llama_family`]),
/// whose fused projections are split into theirs.
pub fn hf_tensors<B: Backend>(model: &Gpt<B>) -> Vec<(String, TensorData)> {
    let config = &model.config;
    let mut exporter = Exporter {
        llama: is_llama_family(config).then_some(config),
        path: Vec::new(),
        tensors: Vec::new(),
    };
    model.visit(&mut exporter);
    exporter.tensors
}

/// f32 tensors, by name, as the bytes of a safetensors file with `metadata` in its header.
pub fn f32_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a TensorData)>,
    metadata: Option<HashMap<String, String>>,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    let views: Vec<(String, F32View)> = (tensors.into_iter())
        .map(|(k, d)| (k.clone(), F32View(d)))
        .collect();
    safetensors::serialize(views, metadata)
}

struct F32View<'a>(&'a TensorData);

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
/// `save_pretrained` writes them, no `lm_head.weight` when tied) and `config.json`, as a
/// GPT-2 or a Llama-family model; other variants are a [`ModelError::Config`].
/// Each file is written to a temporary name and renamed into place.
pub fn save_hf_dir<B: Backend>(model: &Gpt<B>, config: &Gpt2Config, dir: &Path) -> Result<()> {
    if !config.is_gpt2_architecture() && !is_llama_family(config) {
        return Err(ModelError::Config(format!(
            "no transformers architecture holds this variant (position {:?}, norm {:?}, mlp {:?}): GPT-2 and the Llama family (RoPE + RMSNorm + SwiGLU or experts) can be exported",
            config.position, config.norm, config.mlp
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = hf_tensors(model);
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    let bytes = f32_safetensors(tensors.iter().map(|(k, d)| (k, d)), metadata)
        .map_err(|e| ModelError::file(dir.join("model.safetensors"), e.to_string()))?;
    crate::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let config_json =
        serde_json::to_string_pretty(&config.to_hf_json()).expect("config serialises");
    crate::write_atomic(&dir.join("config.json"), config_json.as_bytes())?;
    Ok(())
}
