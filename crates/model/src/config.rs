//! [`Gpt2Config`]: the shape of a GPT-2, with Hugging Face `config.json` field names, and the
//! architecture variants ([`Position`], [`NormKind`], [`MlpKind`], grouped-query and windowed
//! attention, biases, tied embeddings) that turn it into a Llama or a Mixtral.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::llama_config::{from_llama_value, is_llama_family, to_llama_json, LLAMA_FAMILY};

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
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_n_expert() -> usize {
    8
}
fn default_n_expert_active() -> usize {
    2
}
fn default_aux_loss_coef() -> f64 {
    0.01
}

/// How the model knows where a token is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A learned embedding `wpe` added to the token embedding (GPT-2).
    #[default]
    Learned,
    /// Rotary embeddings on each head's queries and keys (RoFormer, Llama), base `rope_theta`.
    Rope,
    /// No position signal but the causal mask (NoPE).
    None,
}

/// The normalisation before attention, before the MLP and at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// `(x − mean) / √(var + ε) · γ + β` (GPT-2).
    #[default]
    #[serde(rename = "layernorm")]
    LayerNorm,
    /// `x / √(mean(x²) + ε) · γ`: no centring, no bias (Llama).
    #[serde(rename = "rmsnorm")]
    RmsNorm,
}

/// The feed-forward part of each block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// `c_proj(GELU(c_fc(x)))` (GPT-2).
    #[default]
    Gelu,
    /// `c_proj(SiLU(gate(x)) ⊙ up(x))`, gate and up side by side in `c_fc` (Llama).
    Swiglu,
    /// `n_expert` SwiGLU experts, `n_expert_active` of them chosen per token by a router
    /// (Mixtral).
    Moe,
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
    /// Whether `c_attn` has a bias (GPT-2 does); no effect when `bias` is false.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// Whether the linear layers carry biases (GPT-2's do; Llama's do not).
    #[serde(default = "default_true")]
    pub bias: bool,
    /// `learned` (GPT-2), `rope` or `none`.
    #[serde(default)]
    pub position: Position,
    /// The rotary base θ: pair `i` of a head turns by `pos · θ^(−2i/head_dim)`.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// `layernorm` (GPT-2) or `rmsnorm`; `layer_norm_epsilon` is the ε of either.
    #[serde(default)]
    pub norm: NormKind,
    /// `gelu` (GPT-2), `swiglu` or `moe`.
    #[serde(default)]
    pub mlp: MlpKind,
    /// Key/value heads: `n_head` (the default) is multi-head attention, fewer is
    /// grouped-query attention (each key/value head serves `n_head / n_kv_head` query heads),
    /// `1` is multi-query attention.
    #[serde(default)]
    pub n_kv_head: Option<usize>,
    /// Each token sees itself and the `attention_window − 1` before it (sliding-window
    /// attention, as Mistral's `sliding_window`); the default sees the whole context.
    #[serde(default)]
    pub attention_window: Option<usize>,
    /// MoE: the number of experts per block.
    #[serde(default = "default_n_expert")]
    pub n_expert: usize,
    /// MoE: how many experts each token is routed to (top-k).
    #[serde(default = "default_n_expert_active")]
    pub n_expert_active: usize,
    /// MoE: the weight of the load-balancing loss added to the training loss.
    #[serde(default = "default_aux_loss_coef")]
    pub router_aux_loss_coef: f64,
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
            bias: true,
            position: Position::Learned,
            rope_theta: default_rope_theta(),
            norm: NormKind::LayerNorm,
            mlp: MlpKind::Gelu,
            n_kv_head: None,
            attention_window: None,
            n_expert: default_n_expert(),
            n_expert_active: default_n_expert_active(),
            router_aux_loss_coef: default_aux_loss_coef(),
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
    /// 2 layers, 4 heads, width 64, context 128: a tiny model for tests.
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

    /// Number of key/value heads (`n_head` unless grouped-query attention is on).
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// Width of `c_attn`'s output: the queries, then the keys and values of `kv_heads()`.
    pub fn qkv_dim(&self) -> usize {
        (self.n_head + 2 * self.kv_heads()) * self.head_dim()
    }

    /// Whether `c_attn` carries a bias.
    pub fn attn_bias(&self) -> bool {
        self.bias && self.qkv_bias
    }

    /// Whether this is exactly GPT-2's architecture (whatever its size): learned positions,
    /// LayerNorm, a GELU MLP, full multi-head attention and biases.
    pub fn is_gpt2_architecture(&self) -> bool {
        self.position == Position::Learned
            && self.norm == NormKind::LayerNorm
            && self.mlp == MlpKind::Gelu
            && self.kv_heads() == self.n_head
            && self.attention_window.is_none()
            && self.bias
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
        self.validate_variants()?;
        if self.mlp == MlpKind::Gelu && self.activation_function != "gelu_new" {
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

    /// Checks the variant keys; each error names its key.
    fn validate_variants(&self) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(m));
        let kv = self.kv_heads();
        if kv == 0 || !self.n_head.is_multiple_of(kv) {
            return err(format!(
                "n_kv_head ({kv}) must divide n_head ({}) (grouped-query attention shares each key/value head among n_head / n_kv_head query heads)",
                self.n_head
            ));
        }
        if self.position == Position::Rope {
            if !self.head_dim().is_multiple_of(2) {
                return err(format!(
                    "position = \"rope\" needs an even head size, but n_embd / n_head = {} / {} = {}",
                    self.n_embd,
                    self.n_head,
                    self.head_dim()
                ));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
                return err(format!(
                    "rope_theta must be positive, got {}",
                    self.rope_theta
                ));
            }
        }
        if self.attention_window == Some(0) {
            return err("attention_window must be at least 1 (or null for full attention)".into());
        }
        if self.mlp == MlpKind::Moe {
            if self.n_expert == 0 || self.n_expert_active == 0 {
                return err(format!(
                    "n_expert ({}) and n_expert_active ({}) must be at least 1",
                    self.n_expert, self.n_expert_active
                ));
            }
            if self.n_expert_active > self.n_expert {
                return err(format!(
                    "n_expert_active ({}) must be at most n_expert ({})",
                    self.n_expert_active, self.n_expert
                ));
            }
            if !(self.router_aux_loss_coef.is_finite() && self.router_aux_loss_coef >= 0.0) {
                return err(format!(
                    "router_aux_loss_coef must be a non-negative number, got {}",
                    self.router_aux_loss_coef
                ));
            }
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
        let b = |n: usize| if self.bias { n } else { 0 };
        let norm = match self.norm {
            NormKind::LayerNorm => 2 * e,
            NormKind::RmsNorm => e,
        };
        let qkv = self.qkv_dim();
        let attn = e * qkv + if self.attn_bias() { qkv } else { 0 } // attn.c_attn
            + e * e + b(e); // attn.c_proj
        let swiglu = e * 2 * i + b(2 * i) + i * e + b(e);
        let mlp = match self.mlp {
            MlpKind::Gelu => e * i + b(i) + i * e + b(e),
            MlpKind::Swiglu => swiglu,
            MlpKind::Moe => e * self.n_expert + self.n_expert * swiglu,
        };
        let block = 2 * norm + attn + mlp;
        let wpe = if self.position == Position::Learned {
            p * e
        } else {
            0
        };
        let head = if self.tie_word_embeddings { 0 } else { v * e };
        v * e + wpe + self.n_layer * block + norm + head
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

    /// Parses a config from JSON text: ours, a Hugging Face GPT-2, or a Llama-family model
    /// (see [`crate::llama_config`]); other models are refused.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("not valid JSON: {e}")))?;
        if let Some(model_type) = value.get("model_type").and_then(|v| v.as_str()) {
            if LLAMA_FAMILY.contains(&model_type) {
                return from_llama_value(&value);
            }
            if model_type != "gpt2" {
                return Err(ModelError::Config(format!(
                    "model_type {model_type:?} is not supported: GPT-2 (\"gpt2\") and the Llama family ({}) can be loaded",
                    LLAMA_FAMILY.join(", ")
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
        let config: Gpt2Config = serde_path_to_error::deserialize(value)
            .map_err(|e| ModelError::Config(format!("{}: {}", e.path(), e.inner())))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes a Hugging Face style `config.json` (loadable by `transformers`): GPT-2's, or a
    /// Llama family's for those variants ([`is_llama_family`]).
    pub fn to_hf_json(&self) -> serde_json::Value {
        if is_llama_family(self) {
            return to_llama_json(self);
        }
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
        let bert = r#"{"model_type": "bert", "vocab_size": 32000}"#;
        assert!(Gpt2Config::from_json_str(bert)
            .unwrap_err()
            .to_string()
            .contains("bert"));
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
