//! Llama-family checkpoints against transformers: a tiny random `LlamaForCausalLM` (GQA,
//! RoPE, RMSNorm, SwiGLU, untied head) and a tiny `MixtralForCausalLM` (the same with a
//! sparse mixture of experts), made by the fixtures' `make_fixture.py` scripts with
//! transformers 5.23.0. Logits, losses and per-step generation logits must match to 1e-4;
//! greedy tokens exactly.

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use common::{fixture, floats, ids, max_abs_diff, reference_of, values};
use llm_model::weights::{f32_safetensors, hf_tensors, save_hf_dir, WeightFile};
use llm_model::{
    generate, generate_uncached, lm_cross_entropy, pretrained, ForwardOptions, GenerateConfig, Gpt,
    Gpt2Config, MlpKind, NormKind, Position,
};
use serde_json::Value;

type B = Flex;
const TOL: f64 = 1e-4;

fn load(name: &str) -> (Gpt<B>, Gpt2Config) {
    pretrained::load_hf_dir::<B>(&fixture(name), &Default::default()).unwrap()
}

fn input_rows(r: &Value) -> Vec<Vec<u32>> {
    r["input_ids"].as_array().unwrap().iter().map(ids).collect()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) if a.first().is_some_and(Value::is_array) => {
            a.iter().flat_map(flat).collect()
        }
        _ => floats(v),
    }
}

/// Logits, loss and greedy generation (cached and not, with each step's logits).
fn check_against_transformers(name: &str) -> (Gpt<B>, Value) {
    let dev = Default::default();
    let r = reference_of(name);
    let (model, _) = load(name);
    let rows = input_rows(&r);
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let ids = model.tokens(&rows, &dev).unwrap();
    let logits = values(model.forward(ids.clone()));
    let d = max_abs_diff(&logits, &flat(&r["logits"]));
    assert!(d < TOL, "{name}: logits differ by {d}");

    let [b, t] = ids.dims();
    let loss = values(lm_cross_entropy(
        &model,
        ids.clone().narrow(1, 0, t - 1),
        ids.narrow(1, 1, t - 1),
    ))[0];
    let want = r["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() < TOL,
        "{name}: loss {loss} against {want} ({b} rows)"
    );

    let g = &r["greedy"];
    let prompt = ids_of(&g["prompt_ids"]);
    let want_tokens = ids_of(&g["new_tokens_cached"]);
    let n = want_tokens.len();
    let config = GenerateConfig {
        max_new_tokens: n,
        ..Default::default()
    };
    assert_eq!(
        generate(&model, &prompt, &config, &dev, |_| {}).unwrap(),
        want_tokens,
        "{name}: cached"
    );
    assert_eq!(
        generate_uncached(&model, &prompt, n, &dev).unwrap(),
        want_tokens,
        "{name}: uncached"
    );
    // Each cached step's logits: the prompt, then one token at a time.
    let mut cache = model.new_cache();
    let last = ForwardOptions {
        last_only: true,
        ..Default::default()
    };
    let mut feed = prompt.clone();
    let mut steps = Vec::new();
    for &next in &want_tokens {
        let out = model
            .forward_with(
                model.tokens(&[&feed], &dev).unwrap(),
                Some(&mut cache),
                last,
            )
            .unwrap();
        steps.extend(values(out.logits));
        feed = vec![next];
    }
    let d = max_abs_diff(&steps, &flat(&g["step_logits_cached"]));
    assert!(d < TOL, "{name}: cached step logits differ by {d}");
    (model, r)
}

fn ids_of(v: &Value) -> Vec<u32> {
    ids(v)
}

#[test]
fn a_llama_checkpoint_matches_transformers() {
    let (_, config) = load("tiny-llama");
    assert_eq!(config.position, Position::Rope);
    assert_eq!(config.norm, NormKind::RmsNorm);
    assert_eq!(config.mlp, MlpKind::Swiglu);
    assert_eq!(
        (config.n_head, config.kv_heads(), config.inner_dim()),
        (4, 2, 160)
    );
    assert!(!config.bias && !config.tie_word_embeddings);
    check_against_transformers("tiny-llama");
}

#[test]
fn a_mixtral_checkpoint_matches_transformers() {
    let (model, r) = check_against_transformers("tiny-mixtral");
    assert_eq!(model.config.mlp, MlpKind::Moe);
    assert_eq!(
        (model.config.n_expert, model.config.n_expert_active),
        (4, 2)
    );
    // The router logits of every layer and the load-balancing loss, with its weight.
    let rows = input_rows(&r);
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let ids = model.tokens(&rows, &Default::default()).unwrap();
    let (_, routers) = model.forward_hidden_routed(ids);
    let got: Vec<f64> = routers.iter().flat_map(|t| values(t.clone())).collect();
    let d = max_abs_diff(&got, &flat(&r["router_logits"]));
    assert!(d < TOL, "router logits differ by {d}");
    let aux = values(model.router_aux_loss(&routers).unwrap())[0];
    let want = r["aux_loss"].as_f64().unwrap();
    assert!((aux - want).abs() < TOL, "aux loss {aux} against {want}");
    assert_eq!(
        model.config.router_aux_loss_coef,
        r["router_aux_loss_coef"].as_f64().unwrap()
    );
    let with_aux = r["loss"].as_f64().unwrap() + model.config.router_aux_loss_coef * aux;
    assert!((with_aux - r["loss_with_aux"].as_f64().unwrap()).abs() < TOL);
}

/// Layer 0's sparse MoE block alone, as transformers' `MixtralSparseMoeBlock`.
#[test]
fn the_mixtral_moe_block_matches_transformers() {
    let (model, _) = load("tiny-mixtral");
    let r = reference_of("tiny-mixtral");
    let m = &r["moe_block_check"];
    let input = flat(&m["input"])
        .iter()
        .map(|&x| x as f32)
        .collect::<Vec<_>>();
    let x = Tensor::<B, 3>::from_data(TensorData::new(input, [2, 5, 64]), &Default::default());
    let (y, router_logits) = model.h[0].moe.as_ref().unwrap().forward(x);
    let d = max_abs_diff(&values(y), &flat(&m["output"]));
    assert!(d < TOL, "block output differs by {d}");
    let d = max_abs_diff(&values(router_logits), &flat(&m["router_logits"]));
    assert!(d < TOL, "router logits differ by {d}");
}

/// Exported back to Hugging Face layout, a Llama has the same tensors (keys, shapes,
/// values) as the file it came from, and loads to the same logits.
#[test]
fn a_llama_exports_to_the_layout_it_came_from() {
    for name in ["tiny-llama", "tiny-mixtral"] {
        let (model, config) = load(name);
        let original = WeightFile::open(fixture(name).join("model.safetensors")).unwrap();
        let exported = hf_tensors(&model);
        assert_eq!(exported.len(), original.shapes().len(), "{name}");
        for (key, data) in &exported {
            assert_eq!(
                original.shapes()[key].as_slice(),
                &data.shape[..],
                "{name}: {key}"
            );
            let want: Vec<f64> = original
                .read_f32(key)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let got: Vec<f64> = data.iter::<f32>().map(f64::from).collect();
            assert_eq!(got, want, "{name}: {key}");
        }
        let dir = tempfile::tempdir().unwrap();
        save_hf_dir(&model, &config, dir.path()).unwrap();
        let (reloaded, config2) =
            pretrained::load_hf_dir::<B>(dir.path(), &Default::default()).unwrap();
        assert_eq!(config2.mlp, config.mlp);
        let ids: Tensor<B, 2, Int> = model
            .tokens(&[&[1, 5, 9, 200]], &Default::default())
            .unwrap();
        assert_eq!(
            values(reloaded.forward(ids.clone())),
            values(model.forward(ids)),
            "{name}"
        );
    }
}

#[test]
fn a_missing_tensor_or_scaled_rope_is_an_error_naming_it() {
    let src = fixture("tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    // Drop one tensor.
    let file = WeightFile::open(src.join("model.safetensors")).unwrap();
    let dropped = "model.layers.1.self_attn.k_proj.weight";
    let kept: Vec<(String, Vec<f32>, Vec<usize>)> = (file.shapes().iter())
        .filter(|(k, _)| k.as_str() != dropped)
        .map(|(k, s)| (k.clone(), file.read_f32(k).unwrap(), s.clone()))
        .collect();
    let views: Vec<(String, TensorData)> = kept
        .into_iter()
        .map(|(k, v, s)| (k, TensorData::new(v, s)))
        .collect();
    let bytes = f32_safetensors(views.iter().map(|(k, d)| (k, d)), None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let e = pretrained::load_hf_dir::<B>(dir.path(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(dropped), "{e}");

    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    let e = Gpt2Config::from_json_str(&config.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope_scaling") && e.contains("llama3"), "{e}");
    config["rope_scaling"] = Value::Null;
    config["hidden_act"] = "gelu".into();
    let e = Gpt2Config::from_json_str(&config.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("hidden_act"), "{e}");
}

/// The Llama's tokenizer.json (SentencePiece-style BPE with byte fallback, not GPT-2's
/// byte-level BPE) loads through the `tokenizers` crate and gives transformers' ids and text.
#[test]
fn a_llama_tokenizer_gives_the_ids_and_text_of_transformers() {
    let tok = llm_bpe::Tokenizer::from_dir(fixture("tiny-llama")).unwrap();
    assert!(tok.is_hf());
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.eot_id(), Some(2), "</s> ends a sequence");
    let r = reference_of("tiny-llama");
    for check in r["tokenizer_checks"].as_array().unwrap() {
        let text = check["text"].as_str().unwrap();
        let want = ids(&check["ids"]);
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tok.encode_ordinary(text), want[1..], "{text:?} without <s>");
        let decoded = check["decoded_with_special"].as_str().unwrap();
        assert_eq!(tok.decode(&got).unwrap(), decoded, "{text:?}");
        // Token bytes rebuild the text (the first word's space is SentencePiece's own).
        let bytes = tok.decode_bytes(&got[1..]).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(" {text}"),
            "{text:?}"
        );
    }
    assert!(
        tok.encode("a</s>b").is_err(),
        "special-token text needs allowing"
    );
    // It saves and loads back the same.
    let dir = tempfile::tempdir().unwrap();
    tok.save_tokenizer_json(dir.path().join("tokenizer.json"))
        .unwrap();
    let again = llm_bpe::Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        again.encode("To be, or not").unwrap(),
        tok.encode("To be, or not").unwrap()
    );
}
