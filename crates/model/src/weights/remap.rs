//! The key remapper: Hugging Face GPT-2 checkpoint keys ↔ our module paths.
//!
//! Our modules carry GPT-2's own names, so the map is almost the identity:
//!
//! | Hugging Face key                      | our module path          |
//! |---------------------------------------|--------------------------|
//! | `transformer.wte.weight`              | `wte.weight`             |
//! | `transformer.h.3.attn.c_attn.weight`  | `h.3.attn.c_attn.weight` |
//! | `transformer.h.3.ln_1.weight` / `.bias` | `h.3.ln_1.gamma` / `.beta` (Burn's LayerNorm names) |
//! | `lm_head.weight` `[vocab, n_embd]`    | tied: skipped; untied: `lm_head.weight`, transposed |
//! | `h.3.attn.bias`, `h.3.attn.masked_bias` | causal-mask buffers: skipped |
//!
//! The original OpenAI layout on the hub has no `transformer.` prefix; both are accepted.
//! HF's `Conv1D` stores weights `[in, out]`, which is Burn's `Linear` layout: no transpose.

/// What a checkpoint key is to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfKey {
    /// A parameter, at this module path of ours.
    Param(String),
    /// A known buffer that holds no parameters (the causal mask), or the tied LM head.
    Skip,
}

/// Maps a checkpoint key to our module path.
pub fn from_hf(key: &str, tied: bool) -> HfKey {
    let k = key.strip_prefix("transformer.").unwrap_or(key);
    if k == "lm_head.weight" && tied {
        return HfKey::Skip;
    }
    if let Some(rest) = k.strip_prefix("h.") {
        let mut parts = rest.splitn(2, '.');
        let (layer, tail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if layer.parse::<usize>().is_ok() && (tail == "attn.bias" || tail == "attn.masked_bias") {
            return HfKey::Skip;
        }
    }
    HfKey::Param(layer_norm_to_burn(k))
}

/// Maps one of our module paths to the Hugging Face key (`transformer.` prefix included,
/// as `save_pretrained` writes it).
pub fn to_hf(path: &str) -> String {
    if path == "lm_head.weight" {
        return path.to_string();
    }
    format!("transformer.{}", layer_norm_to_hf(path))
}

/// Whether this path's tensor is stored transposed in Hugging Face files.
pub fn is_transposed(path: &str) -> bool {
    path == "lm_head.weight"
}

fn is_layer_norm(module: &str) -> bool {
    matches!(module.rsplit('.').next(), Some("ln_1" | "ln_2" | "ln_f"))
}

fn layer_norm_to_burn(k: &str) -> String {
    match k.rsplit_once('.') {
        Some((module, "weight")) if is_layer_norm(module) => format!("{module}.gamma"),
        Some((module, "bias")) if is_layer_norm(module) => format!("{module}.beta"),
        _ => k.to_string(),
    }
}

fn layer_norm_to_hf(k: &str) -> String {
    match k.rsplit_once('.') {
        Some((module, "gamma")) if is_layer_norm(module) => format!("{module}.weight"),
        Some((module, "beta")) if is_layer_norm(module) => format!("{module}.bias"),
        _ => k.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_map_to_our_paths() {
        let p = |s: &str| HfKey::Param(s.to_string());
        assert_eq!(from_hf("transformer.wte.weight", true), p("wte.weight"));
        assert_eq!(from_hf("wte.weight", true), p("wte.weight"));
        assert_eq!(
            from_hf("transformer.h.11.ln_2.weight", true),
            p("h.11.ln_2.gamma")
        );
        assert_eq!(from_hf("h.0.ln_1.bias", true), p("h.0.ln_1.beta"));
        assert_eq!(from_hf("ln_f.bias", true), p("ln_f.beta"));
        assert_eq!(
            from_hf("h.0.attn.c_attn.bias", true),
            p("h.0.attn.c_attn.bias")
        );
        assert_eq!(
            from_hf("h.0.mlp.c_proj.weight", true),
            p("h.0.mlp.c_proj.weight")
        );
        assert_eq!(from_hf("h.0.attn.bias", true), HfKey::Skip);
        assert_eq!(
            from_hf("transformer.h.7.attn.masked_bias", true),
            HfKey::Skip
        );
        assert_eq!(from_hf("lm_head.weight", true), HfKey::Skip);
        assert_eq!(from_hf("lm_head.weight", false), p("lm_head.weight"));
    }

    #[test]
    fn round_trip() {
        for path in [
            "wte.weight",
            "h.2.ln_1.gamma",
            "h.2.attn.c_proj.bias",
            "ln_f.beta",
            "lm_head.weight",
        ] {
            assert_eq!(from_hf(&to_hf(path), false), HfKey::Param(path.to_string()));
        }
        assert_eq!(to_hf("h.0.ln_2.beta"), "transformer.h.0.ln_2.bias");
    }
}
