//! Llama-family checkpoint keys (transformers' `LlamaForCausalLM`, `MistralForCausalLM`,
//! `MixtralForCausalLM`) ↔ our module paths.
//!
//! Our projections are fused where Llama's are separate, so one parameter of ours can be
//! several tensors of theirs, side by side along its output dimension; every Llama linear
//! weight is stored `[out, in]` (`nn.Linear`), ours `[in, out]`.
//!
//! | our path (block `h.N`) | Llama key (`model.layers.N.`…) |
//! |---|---|
//! | `wte.weight` | `model.embed_tokens.weight` |
//! | `ln_1.gamma`, `ln_2.gamma` | `input_layernorm.weight`, `post_attention_layernorm.weight` |
//! | `attn.c_attn.{weight,bias}` | `self_attn.{q,k,v}_proj.{weight,bias}`, side by side |
//! | `attn.c_proj.{weight,bias}` | `self_attn.o_proj.{weight,bias}` |
//! | `mlp.c_fc.{weight,bias}` | `mlp.{gate,up}_proj.{weight,bias}`, side by side |
//! | `mlp.c_proj.{weight,bias}` | `mlp.down_proj.{weight,bias}` |
//! | `moe.router.weight` | `block_sparse_moe.gate.weight` |
//! | `moe.experts.J.c_fc.weight` | `block_sparse_moe.experts.J.{w1,w3}.weight`, side by side |
//! | `moe.experts.J.c_proj.weight` | `block_sparse_moe.experts.J.w2.weight` |
//! | `ln_f.gamma` | `model.norm.weight` |
//! | `lm_head.weight` | `lm_head.weight` (absent when tied) |

use crate::config::Gpt2Config;

/// The tensors that make one of our parameters: `(key, width)` in order along our last
/// dimension, and whether each is stored transposed (`[width, in]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parts {
    pub keys: Vec<(String, usize)>,
    pub transposed: bool,
}

/// Buffers in some Llama checkpoints that hold no parameters.
pub fn is_skipped(key: &str) -> bool {
    key.ends_with("rotary_emb.inv_freq")
}

/// Whether a file's keys are in Llama's layout.
pub fn is_llama_layout<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.any(|k| k.starts_with("model.layers.") || k == "model.embed_tokens.weight")
}

/// The Llama tensors of our parameter `ours`, or `None` if it has none.
pub fn parts(ours: &str, c: &Gpt2Config) -> Option<Parts> {
    let linear = |keys: Vec<(String, usize)>| {
        Some(Parts {
            keys,
            transposed: true,
        })
    };
    let plain = |key: &str, width: usize| {
        Some(Parts {
            keys: vec![(key.to_string(), width)],
            transposed: false,
        })
    };
    match ours {
        "wte.weight" => return plain("model.embed_tokens.weight", c.n_embd),
        "ln_f.gamma" => return plain("model.norm.weight", c.n_embd),
        "lm_head.weight" => return linear(vec![("lm_head.weight".into(), c.vocab_size)]),
        _ => {}
    }
    let rest = ours.strip_prefix("h.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let p = format!("model.layers.{layer}.");
    let (module, param) = tail.rsplit_once('.')?;
    let (h, kv, d, i, e) = (
        c.n_head,
        c.kv_heads(),
        c.head_dim(),
        c.inner_dim(),
        c.n_embd,
    );
    let side_by_side = |names: &[(&str, usize)]| -> Vec<(String, usize)> {
        names
            .iter()
            .map(|(n, w)| (format!("{p}{n}.{param}"), *w))
            .collect()
    };
    let keys = match module {
        "ln_1" => return plain(&format!("{p}input_layernorm.weight"), e),
        "ln_2" => return plain(&format!("{p}post_attention_layernorm.weight"), e),
        "attn.c_attn" => side_by_side(&[
            ("self_attn.q_proj", h * d),
            ("self_attn.k_proj", kv * d),
            ("self_attn.v_proj", kv * d),
        ]),
        "attn.c_proj" => side_by_side(&[("self_attn.o_proj", e)]),
        "mlp.c_fc" => side_by_side(&[("mlp.gate_proj", i), ("mlp.up_proj", i)]),
        "mlp.c_proj" => side_by_side(&[("mlp.down_proj", e)]),
        "moe.router" => side_by_side(&[("block_sparse_moe.gate", c.n_expert)]),
        _ => {
            let expert = module.strip_prefix("moe.experts.")?;
            let (j, proj) = expert.split_once('.')?;
            let x = format!("block_sparse_moe.experts.{j}");
            match proj {
                "c_fc" => side_by_side(&[(&format!("{x}.w1"), i), (&format!("{x}.w3"), i)]),
                "c_proj" => side_by_side(&[(&format!("{x}.w2"), e)]),
                _ => return None,
            }
        }
    };
    // Biases are vectors: side by side, never transposed.
    let transposed = param == "weight";
    Some(Parts { keys, transposed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_projections_are_their_parts_side_by_side() {
        let c = Gpt2Config::from_json_str(
            r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 64}"#,
        )
        .unwrap();
        let p = parts("h.1.attn.c_attn.weight", &c).unwrap();
        assert!(p.transposed);
        assert_eq!(
            p.keys,
            [
                ("model.layers.1.self_attn.q_proj.weight".to_string(), 64),
                ("model.layers.1.self_attn.k_proj.weight".to_string(), 32),
                ("model.layers.1.self_attn.v_proj.weight".to_string(), 32),
            ]
        );
        let p = parts("h.0.mlp.c_fc.weight", &c).unwrap();
        assert_eq!(
            p.keys[1],
            ("model.layers.0.mlp.up_proj.weight".to_string(), 96)
        );
        let p = parts("h.0.moe.experts.3.c_fc.weight", &c).unwrap();
        assert_eq!(
            p.keys[0].0,
            "model.layers.0.block_sparse_moe.experts.3.w1.weight"
        );
        assert_eq!(
            p.keys[1].0,
            "model.layers.0.block_sparse_moe.experts.3.w3.weight"
        );
        assert_eq!(
            parts("h.0.ln_2.gamma", &c).unwrap().keys[0].0,
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert!(!parts("wte.weight", &c).unwrap().transposed);
        assert_eq!(parts("h.0.attn.c_attn.lora.a", &c), None);
    }
}
