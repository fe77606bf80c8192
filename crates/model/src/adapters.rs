//! LoRA checkpoints: the adapters alone, and which base they belong to.
//!
//! A fine-tuning run with LoRA saves only what it trained: the adapters (a safetensors blob
//! in the checkpoint's `adapters` section, keyed by path: `h.0.attn.c_attn.lora.a`) and any
//! task head. The metadata names the base (`base.model`, as `--model` takes it) and holds a
//! SHA-256 of the base's weights (`base.sha256`, [`Gpt::base_fingerprint`]), so the
//! adapters are never put on a different base.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::model::Gpt;
use crate::proj::LoraConfig;
use crate::weights::f32_safetensors;

/// The base model a LoRA checkpoint's adapters were trained on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// As `--model` takes it: a checkpoint, a run directory, a Hugging Face directory or id.
    pub model: String,
    /// [`Gpt::base_fingerprint`] of its weights.
    pub sha256: String,
}

/// Tracks the module path while walking parameters.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn joined(&self) -> String {
        self.0.join(".")
    }
    fn is_adapter(&self) -> bool {
        self.0.iter().any(|p| p == "lora")
    }
}

/// Hashes every base weight (path and f32 bytes, in module order), or collects every
/// adapter with its parameter id (the optimizer keys its state by that id).
struct Walker {
    path: Path,
    hasher: Sha256,
    adapters: BTreeMap<String, (TensorData, ParamId)>,
}

impl<B: Backend> ModuleVisitor<B> for Walker {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let data = param.val().into_data().convert::<f32>();
        if self.path.is_adapter() {
            self.adapters.insert(self.path.joined(), (data, param.id));
        } else {
            self.hasher.update(self.path.joined().as_bytes());
            self.hasher.update(data.as_bytes());
        }
    }
}

/// Fills every adapter from a safetensors blob, by path, with the parameter id it was
/// saved with (so a resumed run's optimizer state finds its parameters again).
struct Filler<'a> {
    path: Path,
    file: &'a SafeTensors<'a>,
    ids: HashMap<String, String>,
    errors: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Filler<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.path.is_adapter() {
            return param;
        }
        let key = self.path.joined();
        let want = param.shape().dims::<D>().to_vec();
        let view = match self.file.tensor(&key) {
            Ok(v) if v.shape() == want.as_slice() => v,
            Ok(v) => {
                self.errors.push(format!(
                    "{key} has shape {:?}, the model wants {want:?}",
                    v.shape()
                ));
                return param;
            }
            Err(_) => {
                self.errors.push(format!("{key} is missing"));
                return param;
            }
        };
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let device = param.val().device();
        let t = Tensor::from_data(TensorData::new(values, want), &device);
        let id = self
            .ids
            .get(&key)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(param.id, ParamId::from);
        Param::initialized(id, t)
    }
}

impl<B: Backend> Gpt<B> {
    fn walk(&self) -> Walker {
        let mut w = Walker {
            path: Path::default(),
            hasher: Sha256::new(),
            adapters: BTreeMap::new(),
        };
        self.visit(&mut w);
        w
    }

    /// A SHA-256 (hex) of the weights, adapters aside: it tells one base from another.
    pub fn base_fingerprint(&self) -> String {
        let digest = self.walk().hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The adapters' weights as safetensors bytes, keyed by path.
    pub fn adapters_to_bytes(&self) -> Result<Vec<u8>> {
        let adapters = self.walk().adapters;
        if adapters.is_empty() {
            return Err(ModelError::Input(
                "the model carries no LoRA adapters".into(),
            ));
        }
        let ids: HashMap<String, String> = adapters
            .iter()
            .map(|(k, (_, id))| (k.clone(), id.val().to_string()))
            .collect();
        f32_safetensors(adapters.iter().map(|(k, (d, _))| (k, d)), Some(ids))
            .map_err(|e| ModelError::Input(format!("cannot serialise the adapters: {e}")))
    }

    /// Loads adapter weights saved by [`Self::adapters_to_bytes`] into this model, which
    /// must carry adapters of the same shapes ([`Self::with_lora`]).
    pub fn load_adapters(self, bytes: &[u8]) -> Result<Self> {
        let bad = |e: safetensors::SafeTensorError| {
            ModelError::Input(format!("the adapters section is not safetensors: {e}"))
        };
        let file = SafeTensors::deserialize(bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let mut filler = Filler {
            path: Path::default(),
            file: &file,
            ids: header.metadata().clone().unwrap_or_default(),
            errors: Vec::new(),
        };
        let model = self.map(&mut filler);
        match filler.errors.is_empty() {
            true => Ok(model),
            false => Err(ModelError::Input(format!(
                "the adapters do not fit the model: {}",
                filler.errors.join("; ")
            ))),
        }
    }
}

impl Checkpoint {
    /// A LoRA checkpoint of `model`: the base's shape in the header, the adapters in the
    /// `adapters` section, `base` and the adapters' config in the metadata; no base weights.
    pub fn from_adapters<B: Backend>(
        model: &Gpt<B>,
        lora: &LoraConfig,
        base: &BaseModel,
    ) -> Result<Self> {
        model.check_finite()?;
        let mut ckpt = Checkpoint::new(model.config().clone());
        ckpt.set_section("adapters", model.adapters_to_bytes()?);
        ckpt.metadata = serde_json::json!({ "base": base, "lora": lora });
        Ok(ckpt)
    }

    /// The base a LoRA checkpoint names, if it is one.
    pub fn lora_base(&self) -> Option<(BaseModel, LoraConfig)> {
        self.section("adapters")?;
        let base = serde_json::from_value(self.metadata["base"].clone()).ok()?;
        let lora = serde_json::from_value(self.metadata["lora"].clone()).ok()?;
        Some((base, lora))
    }

    /// `base` with this LoRA checkpoint's adapters. A base whose weights are not the ones
    /// the adapters were trained on is refused.
    pub fn adapted<B: Backend>(&self, base: Gpt<B>, device: &B::Device) -> Result<Gpt<B>> {
        let (named, lora) = self.lora_base().ok_or_else(|| {
            ModelError::Input("not a LoRA checkpoint (no adapters section or base)".into())
        })?;
        let found = base.base_fingerprint();
        if found != named.sha256 {
            return Err(ModelError::Input(format!(
                "these adapters were trained on {} (weights sha256 {}…), but the base given has sha256 {}…: use the same base",
                named.model,
                &named.sha256[..12.min(named.sha256.len())],
                &found[..12]
            )));
        }
        let bytes = self.section("adapters").expect("lora_base checked it");
        base.with_lora(&lora, device)?.load_adapters(bytes)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;
    use crate::Gpt2Config;

    type B = Flex;

    #[test]
    fn adapters_round_trip_and_refuse_another_base() {
        let device = Default::default();
        <B as Backend>::seed(&device, 3);
        let base = Gpt2Config::tiny().init::<B>(&device).unwrap();
        let lora = LoraConfig::new(2, Some(4.0));
        let mut adapted = base.clone().with_lora(&lora, &device).unwrap();
        for block in &mut adapted.h {
            let l = block.mlp.as_mut().unwrap().c_fc.lora.as_mut().unwrap();
            l.b = Param::from_tensor(Tensor::random(
                l.b.dims(),
                Distribution::Normal(0.0, 0.1),
                &device,
            ));
        }
        let named = BaseModel {
            model: "base".into(),
            sha256: base.base_fingerprint(),
        };
        assert_eq!(
            adapted.base_fingerprint(),
            named.sha256,
            "adapters do not change the base"
        );
        let ckpt = Checkpoint::from_adapters(&adapted, &lora, &named).unwrap();
        assert!(
            ckpt.section("model").is_none(),
            "no base weights in a LoRA checkpoint"
        );
        let e = ckpt.model::<B>(&device).unwrap_err().to_string();
        assert!(e.contains("LoRA checkpoint") && e.contains("base"), "{e}");

        let ids = base.tokens(&[&[5, 6, 7, 8]], &device).unwrap();
        let restored = ckpt.adapted(base.clone(), &device).unwrap();
        let id = |m: &Gpt<B>| m.h[0].attn.c_attn.lora.as_ref().unwrap().a.id;
        assert_eq!(
            id(&restored),
            id(&adapted),
            "the optimizer finds its adapters again"
        );
        let diff: f32 = (restored.forward(ids.clone()) - adapted.forward(ids))
            .abs()
            .max()
            .into_scalar();
        assert_eq!(diff, 0.0);

        let other = Gpt2Config::tiny().init::<B>(&device).unwrap();
        let e = ckpt.adapted(other, &device).unwrap_err().to_string();
        assert!(
            e.contains("trained on base") && e.contains("same base"),
            "{e}"
        );
    }
}
