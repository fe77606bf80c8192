//! [`Gpt2Config`]: the shape of a GPT-2, with Hugging Face `config.json` field names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}
fn default_dropout() -> f64 {
    0.1
}
fn default_activation() -> String {
    "gelu_new".into()
}

/// The hyper-parameters of a GPT-2 model.
///
/// Field names are Hugging Face's, so a hub `config.json` deserialises directly (its other
/// fields are ignored); `qkv_bias` is ours, for training from scratch without the q/k/v
/// bias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Number of token ids (50,257 for GPT-2; a trained tokenizer's `vocab_size()`).
    pub vocab_size: usize,
    /// Context length: the number of learned positions.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads; `n_embd / n_head` is the head size.
    pub n_head: usize,
    /// Hidden width of the MLP; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Only `gelu_new` (GELU, tanh approximation) is GPT-2's.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Dropout on each block's attention and MLP outputs.
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    /// Dropout on the summed token and position embeddings.
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities.
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    /// Whether the LM head reuses `wte` (GPT-2 does).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Whether `c_attn` has a bias (GPT-2 does).
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
}

/// Named presets, for `--model-config <name>` and [`Gpt2Config::preset`].
pub const PRESETS: [&str; 7] = [
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "tiny",
    "mini",
    "small",
];

impl Gpt2Config {
    fn base(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_activation(),
            layer_norm_epsilon: 1e-5,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            tie_word_embeddings: true,
            qkv_bias: true,
        }
    }

    /// GPT-2 small: 124M parameters.
    pub fn gpt2() -> Self {
        Self::base(12, 12, 768, 1024)
    }
    /// GPT-2 medium: 355M parameters.
    pub fn gpt2_medium() -> Self {
        Self::base(24, 16, 1024, 1024)
    }
    /// GPT-2 large: 774M parameters.
    pub fn gpt2_large() -> Self {
        Self::base(36, 20, 1280, 1024)
    }
    /// GPT-2 XL: 1.5B parameters.
    pub fn gpt2_xl() -> Self {
        Self::base(48, 25, 1600, 1024)
    }
    /// 2 layers, 4 heads, width 64, context 128: the shape of the test fixture. For tests.
    pub fn tiny() -> Self {
        Self::base(2, 4, 64, 128)
    }
    /// 4 layers, 4 heads, width 256, context 256: trains in minutes on a CPU.
    pub fn mini() -> Self {
        Self::base(4, 4, 256, 256)
    }
    /// 6 layers, 6 heads, width 384, context 256: nanoGPT's "baby GPT" shape.
    pub fn small() -> Self {
        Self::base(6, 6, 384, 256)
    }

    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "gpt2" => Self::gpt2(),
            "gpt2-medium" => Self::gpt2_medium(),
            "gpt2-large" => Self::gpt2_large(),
            "gpt2-xl" => Self::gpt2_xl(),
            "tiny" => Self::tiny(),
            "mini" => Self::mini(),
            "small" => Self::small(),
            other => {
                return Err(ModelError::Config(format!(
                    "unknown preset {other:?}; presets: {}",
                    PRESETS.join(", ")
                )))
            }
        })
    }

    /// A preset name (see [`PRESETS`]) or the path of a JSON config file.
    pub fn load(spec: &str) -> Result<Self> {
        if PRESETS.contains(&spec) {
            Self::preset(spec)
        } else {
            Self::from_json_file(spec)
        }
    }

    /// Sets every dropout probability.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.resid_pdrop = p;
        self.embd_pdrop = p;
        self.attn_pdrop = p;
        self
    }

    /// Sets the vocabulary size (e.g. from a trained tokenizer).
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        self.vocab_size = vocab_size;
        self
    }

    /// Hidden width of the MLP.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks that the numbers make a GPT-2 that can be built.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_dim()),
        ] {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return err(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.activation_function != "gelu_new" {
            return err(format!(
                "activation_function {:?} is not supported (GPT-2 uses \"gelu_new\", GELU with the tanh approximation)",
                self.activation_function
            ));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return err(format!(
                "layer_norm_epsilon must be positive, got {}",
                self.layer_norm_epsilon
            ));
        }
        for (name, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return err(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if self.vocab_size > i32::MAX as usize {
            return err(format!("vocab_size {} is too large", self.vocab_size));
        }
        Ok(())
    }

    /// The fields whose values differ between `self` and `other`, as
    /// `(field, self's value, other's value)`, dropout aside (it changes no weight) and
    /// `n_inner` compared by its effective width.
    pub fn differences(&self, other: &Self) -> Vec<(String, String, String)> {
        let norm = |c: &Self| {
            let mut c = c.clone().with_dropout(0.0);
            c.n_inner = Some(c.inner_dim());
            serde_json::to_value(c).expect("config serialises")
        };
        let (a, b) = (norm(self), norm(other));
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.to_string(), b[k].to_string()))
            .collect()
    }

    /// Number of parameters, the tied LM head counted once.
    pub fn num_params(&self) -> usize {
        let (v, p, e, i) = (
            self.vocab_size,
            self.n_positions,
            self.n_embd,
            self.inner_dim(),
        );
        let qkv_bias = if self.qkv_bias { 3 * e } else { 0 };
        let block = 2 * e            // ln_1
            + e * 3 * e + qkv_bias   // attn.c_attn
            + e * e + e              // attn.c_proj
            + 2 * e                  // ln_2
            + e * i + i              // mlp.c_fc
            + i * e + e; // mlp.c_proj
        let head = if self.tie_word_embeddings { 0 } else { v * e };
        v * e + p * e + self.n_layer * block + 2 * e + head
    }

    /// Reads a config: a Hugging Face `config.json` (checked to be GPT-2) or one of ours.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| ModelError::File {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Parses a config from JSON text, refusing models that are not GPT-2.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("not valid JSON: {e}")))?;
        if let Some(model_type) = value.get("model_type").and_then(|v| v.as_str()) {
            if model_type != "gpt2" {
                return Err(ModelError::Config(format!(
                    "model_type {model_type:?} is not supported: only \"gpt2\" models can be loaded"
                )));
            }
        }
        if let Some(archs) = value.get("architectures").and_then(|v| v.as_array()) {
            let known = ["GPT2LMHeadModel", "GPT2Model"];
            if let Some(bad) = archs
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| !known.contains(a))
            {
                return Err(ModelError::Config(format!(
                    "architecture {bad:?} is not supported (expected GPT2LMHeadModel)"
                )));
            }
        }
        for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
            if value.get(flag).and_then(|v| v.as_bool()) == Some(true) {
                return Err(ModelError::Config(format!(
                    "{flag} = true is not supported"
                )));
            }
        }
        if value.get("scale_attn_weights").and_then(|v| v.as_bool()) == Some(false) {
            return Err(ModelError::Config(
                "scale_attn_weights = false is not supported".into(),
            ));
        }
        let config: Gpt2Config =
            serde_json::from_value(value).map_err(|e| ModelError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes a Hugging Face style `config.json` (loadable by `transformers`).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let o = v.as_object_mut().expect("an object");
        o.insert("model_type".into(), "gpt2".into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["GPT2LMHeadModel"]),
        );
        o.insert("n_ctx".into(), self.n_positions.into());
        o.insert("bos_token_id".into(), 50256.into());
        o.insert("eos_token_id".into(), 50256.into());
        o.insert("scale_attn_weights".into(), true.into());
        o.insert("initializer_range".into(), 0.02.into());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parameter_counts() {
        assert_eq!(Gpt2Config::gpt2().num_params(), 124_439_808);
        assert_eq!(Gpt2Config::gpt2_medium().num_params(), 354_823_168);
        assert_eq!(Gpt2Config::gpt2_large().num_params(), 774_030_080);
        assert_eq!(Gpt2Config::gpt2_xl().num_params(), 1_557_611_200);
        for name in PRESETS {
            Gpt2Config::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = Gpt2Config::tiny();
        c.n_head = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("n_embd (64)") && e.contains("n_head (3)"), "{e}");
        let mut c = Gpt2Config::tiny();
        c.activation_function = "relu".into();
        assert!(c.validate().unwrap_err().to_string().contains("relu"));
        let mut c = Gpt2Config::tiny();
        c.n_layer = 0;
        assert!(c.validate().unwrap_err().to_string().contains("n_layer"));
        assert!(Gpt2Config::preset("gpt5").is_err());
    }

    #[test]
    fn reads_hf_config_and_refuses_other_models() {
        let hf = r#"{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
            "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": null,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "resid_pdrop": 0.1,
            "embd_pdrop": 0.1, "attn_pdrop": 0.1, "n_ctx": 1024, "summary_type": "cls_index"}"#;
        assert_eq!(Gpt2Config::from_json_str(hf).unwrap(), Gpt2Config::gpt2());
        let llama = r#"{"model_type": "llama", "vocab_size": 32000}"#;
        assert!(Gpt2Config::from_json_str(llama)
            .unwrap_err()
            .to_string()
            .contains("llama"));
        let arch = hf.replace("GPT2LMHeadModel", "GPT2ForSequenceClassification");
        assert!(Gpt2Config::from_json_str(&arch).is_err());
        let round =
            Gpt2Config::from_json_str(&Gpt2Config::mini().to_hf_json().to_string()).unwrap();
        assert_eq!(round, Gpt2Config::mini());
    }
}

#[cfg(test)]
mod preset_files {
    use super::*;

    /// `configs/models/<preset>.json` hold the presets, so recipes can name or copy them.
    #[test]
    fn config_files_equal_the_presets() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/models");
        for name in PRESETS {
            let from_file = Gpt2Config::from_json_file(dir.join(format!("{name}.json"))).unwrap();
            assert_eq!(from_file, Gpt2Config::preset(name).unwrap(), "{name}");
        }
    }
}
