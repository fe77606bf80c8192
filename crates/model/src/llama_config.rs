//! Hugging Face Llama-family `config.json` files (`model_type` `llama`, `mistral`,
//! `mixtral`) as a [`Gpt2Config`] variant: RoPE, RMSNorm, SwiGLU (or a mixture of SwiGLU
//! experts), grouped-query attention, and biases as the file says.
//!
//! | Hugging Face | ours |
//! |---|---|
//! | `hidden_size`, `num_hidden_layers`, `num_attention_heads` | `n_embd`, `n_layer`, `n_head` |
//! | `num_key_value_heads` | `n_kv_head` |
//! | `intermediate_size` | `n_inner` |
//! | `max_position_embeddings` | `n_positions` |
//! | `rms_norm_eps` | `layer_norm_epsilon` |
//! | `rope_theta` (or `rope_parameters.rope_theta`) | `rope_theta` |
//! | `attention_bias` (= `mlp_bias`) | `bias` |
//! | `sliding_window` | `attention_window` |
//! | `num_local_experts`, `num_experts_per_tok`, `router_aux_loss_coef` | `n_expert`, `n_expert_active`, `router_aux_loss_coef` |

use serde_json::{json, Value};

use crate::config::{Gpt2Config, MlpKind, NormKind, Position};
use crate::error::{ModelError, Result};

/// The `model_type`s read as Llama-family configs.
pub const LLAMA_FAMILY: [&str; 3] = ["llama", "mistral", "mixtral"];

fn config_err(m: String) -> ModelError {
    ModelError::Config(m)
}

fn get_usize(v: &Value, key: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| config_err(format!("{key} is missing or not a whole number")))
}

fn get_f64(v: &Value, key: &str, default: f64) -> Result<f64> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| config_err(format!("{key} is not a number: {x}"))),
    }
}

fn get_bool(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The rotary base, refusing scaled RoPE (`rope_scaling`, or a `rope_parameters.rope_type`
/// other than `default`): its frequencies are not plain `θ^(−2i/d)`.
fn rope_theta(v: &Value) -> Result<f64> {
    let params = v.get("rope_parameters").filter(|p| !p.is_null());
    for (key, scaling) in [
        ("rope_scaling", v.get("rope_scaling")),
        ("rope_parameters", params),
    ] {
        let Some(scaling) = scaling.filter(|s| !s.is_null()) else {
            continue;
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(config_err(format!(
                "{key} with rope_type {kind:?} is not supported: only unscaled RoPE (\"default\") is"
            )));
        }
    }
    match params.and_then(|p| p.get("rope_theta")) {
        Some(theta) => get_f64(&json!({ "rope_theta": theta }), "rope_theta", 10_000.0),
        None => get_f64(v, "rope_theta", 10_000.0),
    }
}

/// Reads a Llama, Mistral or Mixtral `config.json` (already parsed).
pub fn from_llama_value(v: &Value) -> Result<Gpt2Config> {
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama");
    let act = v
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(config_err(format!(
            "hidden_act {act:?} is not supported: Llama-family models use \"silu\" (SwiGLU)"
        )));
    }
    let (n_embd, n_head) = (
        get_usize(v, "hidden_size")?,
        get_usize(v, "num_attention_heads")?,
    );
    if let Some(head_dim) = v.get("head_dim").and_then(Value::as_u64) {
        if head_dim as usize * n_head != n_embd {
            return Err(config_err(format!(
                "head_dim {head_dim} × num_attention_heads {n_head} ≠ hidden_size {n_embd}: a head size apart from hidden_size / num_attention_heads is not supported"
            )));
        }
    }
    let (attention_bias, mlp_bias) = (
        get_bool(v, "attention_bias", false),
        get_bool(v, "mlp_bias", false),
    );
    if attention_bias != mlp_bias {
        return Err(config_err(format!(
            "attention_bias = {attention_bias} with mlp_bias = {mlp_bias} is not supported: biases are all or none"
        )));
    }
    let moe = model_type == "mixtral";
    let mut config = Gpt2Config {
        vocab_size: get_usize(v, "vocab_size")?,
        n_positions: get_usize(v, "max_position_embeddings")?,
        n_embd,
        n_layer: get_usize(v, "num_hidden_layers")?,
        n_head,
        n_inner: Some(get_usize(v, "intermediate_size")?),
        activation_function: "silu".into(),
        layer_norm_epsilon: get_f64(v, "rms_norm_eps", 1e-6)?,
        tie_word_embeddings: get_bool(v, "tie_word_embeddings", false),
        qkv_bias: attention_bias,
        bias: attention_bias,
        position: Position::Rope,
        rope_theta: rope_theta(v)?,
        norm: NormKind::RmsNorm,
        mlp: if moe { MlpKind::Moe } else { MlpKind::Swiglu },
        n_kv_head: Some(
            v.get("num_key_value_heads")
                .and_then(Value::as_u64)
                .map_or(n_head, |x| x as usize),
        ),
        attention_window: v
            .get("sliding_window")
            .and_then(Value::as_u64)
            .map(|w| w as usize),
        ..Gpt2Config::tiny()
    }
    .with_dropout(0.0);
    config.attn_pdrop = get_f64(v, "attention_dropout", 0.0)?;
    if moe {
        config.n_expert = get_usize(v, "num_local_experts")?;
        config.n_expert_active = get_usize(v, "num_experts_per_tok")?;
        config.router_aux_loss_coef = get_f64(v, "router_aux_loss_coef", 0.001)?;
    }
    config.validate()?;
    Ok(config)
}

/// Whether transformers has an architecture for this config: RoPE, RMSNorm and SwiGLU (or
/// experts), which makes it a Llama (a Mistral with a window, a Mixtral with experts).
pub fn is_llama_family(c: &Gpt2Config) -> bool {
    c.position == Position::Rope
        && c.norm == NormKind::RmsNorm
        && c.mlp != MlpKind::Gelu
        && c.attn_bias() == c.bias
}

/// The `config.json` transformers reads for a Llama-family config.
pub fn to_llama_json(c: &Gpt2Config) -> Value {
    let (model_type, arch) = match (c.mlp, c.attention_window) {
        (MlpKind::Moe, _) => ("mixtral", "MixtralForCausalLM"),
        (_, Some(_)) => ("mistral", "MistralForCausalLM"),
        _ => ("llama", "LlamaForCausalLM"),
    };
    let mut v = json!({
        "model_type": model_type,
        "architectures": [arch],
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.inner_dim(),
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.kv_heads(),
        "head_dim": c.head_dim(),
        "max_position_embeddings": c.n_positions,
        "rms_norm_eps": c.layer_norm_epsilon,
        "rope_theta": c.rope_theta,
        "hidden_act": "silu",
        "attention_bias": c.bias,
        "mlp_bias": c.bias,
        "attention_dropout": c.attn_pdrop,
        "tie_word_embeddings": c.tie_word_embeddings,
        "sliding_window": c.attention_window,
        "torch_dtype": "float32",
    });
    if c.mlp == MlpKind::Moe {
        v["num_local_experts"] = c.n_expert.into();
        v["num_experts_per_tok"] = c.n_expert_active.into();
        v["router_aux_loss_coef"] = c.router_aux_loss_coef.into();
    }
    v
}
