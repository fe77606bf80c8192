//! The architecture variants (RoPE, RMSNorm, SwiGLU, MoE, grouped-query and windowed
//! attention, biases, tied embeddings) on tiny random models: each runs the same with and
//! without the KV cache, batched and alone, through a checkpoint, and with attention
//! probabilities; grouped-query attention equals multi-head attention with repeated heads;
//! bad values are config errors that name the key.

use burn::backend::Flex;
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use llm_model::{
    generate, generate_uncached, Checkpoint, ForwardOptions, GenerateConfig, Gpt, Gpt2Config,
    MlpKind, NormKind, Position,
};

type B = Flex;

/// A tiny base: vocab 97, context 32, 2 layers, 4 heads of 8, no dropout.
fn base() -> Gpt2Config {
    Gpt2Config {
        vocab_size: 97,
        n_positions: 32,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        ..Gpt2Config::tiny()
    }
    .with_dropout(0.0)
}

/// Every variant on its own, and the Llama and Mixtral combinations.
fn variants() -> Vec<(&'static str, Gpt2Config)> {
    let llama = Gpt2Config {
        position: Position::Rope,
        norm: NormKind::RmsNorm,
        mlp: MlpKind::Swiglu,
        n_kv_head: Some(2),
        bias: false,
        tie_word_embeddings: false,
        n_inner: Some(40),
        ..base()
    };
    vec![
        ("gpt2", base()),
        (
            "rope",
            Gpt2Config {
                position: Position::Rope,
                ..base()
            },
        ),
        (
            "nope",
            Gpt2Config {
                position: Position::None,
                ..base()
            },
        ),
        (
            "rmsnorm",
            Gpt2Config {
                norm: NormKind::RmsNorm,
                ..base()
            },
        ),
        (
            "swiglu",
            Gpt2Config {
                mlp: MlpKind::Swiglu,
                ..base()
            },
        ),
        (
            "moe",
            Gpt2Config {
                mlp: MlpKind::Moe,
                n_expert: 4,
                n_expert_active: 2,
                ..base()
            },
        ),
        (
            "gqa",
            Gpt2Config {
                n_kv_head: Some(2),
                ..base()
            },
        ),
        (
            "mqa",
            Gpt2Config {
                n_kv_head: Some(1),
                ..base()
            },
        ),
        (
            "window",
            Gpt2Config {
                attention_window: Some(5),
                ..base()
            },
        ),
        (
            "no-bias",
            Gpt2Config {
                bias: false,
                ..base()
            },
        ),
        (
            "untied",
            Gpt2Config {
                tie_word_embeddings: false,
                ..base()
            },
        ),
        ("llama", llama.clone()),
        (
            "mixtral",
            Gpt2Config {
                mlp: MlpKind::Moe,
                n_expert: 4,
                n_expert_active: 2,
                attention_window: Some(6),
                ..llama
            },
        ),
    ]
}

fn model(config: &Gpt2Config, seed: u64) -> Gpt<B> {
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    config.init::<B>(&Default::default()).unwrap()
}

fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const IDS: [u32; 12] = [5, 17, 3, 88, 41, 41, 9, 60, 2, 77, 13, 30];

fn logits(m: &Gpt<B>, rows: &[&[u32]]) -> Vec<f32> {
    floats(m.forward(m.tokens(rows, &Default::default()).unwrap()))
}

#[test]
fn every_variant_runs_the_same_with_and_without_the_cache() {
    let dev = Default::default();
    for (name, config) in variants() {
        let m = model(&config, 1);
        let full = logits(&m, &[&IDS]); // [1, 12, 97]
                                        // The first 7 tokens at once, then one at a time, through the cache.
        let mut cache = m.new_cache();
        let mut stepped = Vec::new();
        let mut feed = |ids: &[u32], cache: &mut llm_model::KvCache<B>| {
            let out = m
                .forward_with(
                    m.tokens(&[ids], &dev).unwrap(),
                    Some(cache),
                    ForwardOptions::default(),
                )
                .unwrap();
            stepped.extend(floats(out.logits));
        };
        feed(&IDS[..7], &mut cache);
        for i in 7..IDS.len() {
            feed(&IDS[i..i + 1], &mut cache);
        }
        let d = max_diff(&full, &stepped);
        assert!(d < 1e-4, "{name}: cached logits differ by {d}");

        let config = GenerateConfig {
            max_new_tokens: 10,
            ..Default::default()
        };
        let cached = generate(&m, &IDS[..4], &config, &dev, |_| {}).unwrap();
        let uncached = generate_uncached(&m, &IDS[..4], 10, &dev).unwrap();
        assert_eq!(cached, uncached, "{name}: greedy generation");
    }
}

#[test]
fn every_variant_batches_and_round_trips_a_checkpoint() {
    let dev = Default::default();
    let other: [u32; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    for (name, config) in variants() {
        let m = model(&config, 2);
        let alone = [logits(&m, &[&IDS]), logits(&m, &[&other])].concat();
        let batched = logits(&m, &[&IDS, &other]);
        assert!(max_diff(&alone, &batched) < 1e-5, "{name}: batch of 2");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        Checkpoint::from_model(&m).unwrap().save(&path).unwrap();
        let loaded: Gpt<B> = Checkpoint::load(&path).unwrap().model(&dev).unwrap();
        assert_eq!(loaded.config, config, "{name}");
        assert_eq!(
            logits(&loaded, &[&IDS]),
            logits(&m, &[&IDS]),
            "{name}: checkpoint"
        );

        let counted: usize = m.num_params();
        assert_eq!(counted, config.num_params(), "{name}: num_params");
    }
}

#[test]
fn attention_probabilities_respect_the_mask_and_the_window() {
    for (name, config) in variants() {
        let m = model(&config, 3);
        let out = m
            .forward_with_attention(m.tokens(&[&IDS], &Default::default()).unwrap())
            .unwrap();
        assert_eq!(out.attentions.len(), config.n_layer, "{name}");
        let window = config.attention_window.unwrap_or(usize::MAX);
        for probs in out.attentions {
            let [_, h, t, _] = probs.dims();
            assert_eq!(h, config.n_head, "{name}: one map per query head");
            let p = floats(probs);
            for (row, chunk) in p.chunks(t).enumerate() {
                let q = row % t;
                let sum: f32 = chunk.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{name}: row sums to {sum}");
                for (k, &w) in chunk.iter().enumerate() {
                    if k > q || q - k >= window {
                        assert_eq!(w, 0.0, "{name}: query {q} sees key {k}");
                    }
                }
            }
        }
    }
}

/// A grouped-query model computes what a multi-head model computes when that model's key and
/// value heads are the grouped ones, repeated (`repeat_kv`: key/value head `j` serves query
/// heads `j·g .. (j+1)·g`).
#[test]
fn grouped_query_attention_is_multi_head_attention_with_shared_heads() {
    let gqa_config = Gpt2Config {
        n_kv_head: Some(2),
        position: Position::Rope,
        ..base()
    };
    let gqa = model(&gqa_config, 4);
    let mut mha = model(
        &Gpt2Config {
            n_kv_head: None,
            ..gqa_config.clone()
        },
        5,
    );
    let (e, d, h, kv) = (32, 8, 4, 2);
    let g = h / kv;
    // Copy every weight, then widen each c_attn's k and v columns.
    let record = gqa.clone().into_record();
    let mut wide = gqa.clone().into_record();
    for (i, block) in record.h.iter().enumerate() {
        let w = block.attn.c_attn.weight.val(); // [e, (h + 2kv)·d]
        let bias = block.attn.c_attn.bias.as_ref().unwrap().val(); // [(h + 2kv)·d]
        let mut cols = vec![w.clone().narrow(1, 0, h * d)];
        let mut bcols = vec![bias.clone().narrow(0, 0, h * d)];
        for part in 0..2 {
            for head in 0..h {
                let src = h * d + part * kv * d + (head / g) * d;
                cols.push(w.clone().narrow(1, src, d));
                bcols.push(bias.clone().narrow(0, src, d));
            }
        }
        wide.h[i].attn.c_attn.weight = Param::from_tensor(Tensor::cat(cols, 1));
        wide.h[i].attn.c_attn.bias = Some(Param::from_tensor(Tensor::cat(bcols, 0)));
        assert_eq!(wide.h[i].attn.c_attn.weight.dims(), [e, 3 * e]);
    }
    mha = mha.load_record(wide);
    let d = max_diff(&logits(&gqa, &[&IDS]), &logits(&mha, &[&IDS]));
    assert!(d < 1e-5, "GQA and its widened MHA differ by {d}");
}

#[test]
fn a_window_as_long_as_the_context_is_full_attention() {
    let full = model(&base(), 6);
    // The same weights (a second draw could interleave with other tests' use of the RNG).
    let mut windowed = full.clone();
    for block in &mut windowed.h {
        block.attn.window = Some(32);
    }
    // Two code paths (the fused causal kernel, the masked one): equal to rounding.
    let d = max_diff(&logits(&full, &[&IDS]), &logits(&windowed, &[&IDS]));
    assert!(d < 1e-5, "{d}");
    // A window of one: each token sees only itself.
    for block in &mut windowed.h {
        block.attn.window = Some(1);
    }
    let out = windowed
        .forward_with_attention(windowed.tokens(&[&IDS], &Default::default()).unwrap())
        .unwrap();
    let p = floats(out.attentions[0].clone());
    let t = IDS.len();
    for (row, chunk) in p.chunks(t).enumerate() {
        assert_eq!(
            chunk[row % t],
            1.0,
            "query {} attends to itself only",
            row % t
        );
    }
}

#[test]
fn the_load_balancing_loss_is_k_for_an_even_router_and_has_a_gradient() {
    use burn::backend::Autodiff;
    type A = Autodiff<B>;
    let config = Gpt2Config {
        mlp: MlpKind::Moe,
        n_expert: 4,
        n_expert_active: 2,
        ..base()
    };
    let mut m: Gpt<A> = config.init(&Default::default()).unwrap();
    for block in &mut m.h {
        let router = &mut block.moe.as_mut().unwrap().router;
        router.weight = Param::from_tensor(router.weight.val().zeros_like().require_grad());
    }
    let ids = m.tokens(&[&IDS], &Default::default()).unwrap();
    let (_, routers) = m.forward_hidden_routed(ids);
    assert_eq!(routers.len(), 2);
    let aux = m.router_aux_loss(&routers).unwrap();
    let v = floats(aux.clone().inner())[0];
    assert!(
        (v - 2.0).abs() < 1e-5,
        "an even router gives k = 2, got {v}"
    );
    let grads = aux.backward();
    let router = &m.h[0].moe.as_ref().unwrap().router.weight;
    assert!(router.grad(&grads).is_some(), "the router gets a gradient");
    // A GPT-2 has no routers and no auxiliary loss.
    let g: Gpt<B> = base().init(&Default::default()).unwrap();
    let (_, none) = g.forward_hidden_routed(g.tokens(&[&IDS], &Default::default()).unwrap());
    assert!(none.is_empty() && g.router_aux_loss(&none).is_none());
}

#[test]
fn bad_variant_values_name_the_key() {
    let err = |json: &str| {
        let mut v = serde_json::to_value(base()).unwrap();
        let patch: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        Gpt2Config::from_json_str(&v.to_string())
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"{"position": "rotary"}"#);
    assert!(e.contains("position") && e.contains("rotary"), "{e}");
    let e = err(r#"{"mlp": "relu"}"#);
    assert!(e.contains("mlp") && e.contains("relu"), "{e}");
    let e = err(r#"{"norm": "batchnorm"}"#);
    assert!(e.contains("norm") && e.contains("batchnorm"), "{e}");
    let e = err(r#"{"n_kv_head": 3}"#);
    assert!(
        e.contains("n_kv_head (3)") && e.contains("n_head (4)"),
        "{e}"
    );
    let e = err(r#"{"position": "rope", "n_embd": 36, "n_head": 4}"#);
    assert!(e.contains("rope") && e.contains("9"), "{e}");
    let e = err(r#"{"mlp": "moe", "n_expert": 2, "n_expert_active": 3}"#);
    assert!(
        e.contains("n_expert_active (3)") && e.contains("n_expert (2)"),
        "{e}"
    );
    let e = err(r#"{"attention_window": 0}"#);
    assert!(e.contains("attention_window"), "{e}");
}

#[test]
fn rope_makes_scores_depend_on_distance_only() {
    let dev = Default::default();
    let rope = llm_model::Rope::<B>::new(10_000.0, 8, 0..40, &dev);
    let q = Tensor::<B, 1>::from_data(
        TensorData::from([0.3f32, -1.0, 0.5, 2.0, 0.1, 0.7, -0.4, 1.1]),
        &dev,
    );
    let k = Tensor::<B, 1>::from_data(
        TensorData::from([1.0f32, 0.2, -0.3, 0.4, 0.9, -1.2, 0.6, 0.05]),
        &dev,
    );
    let at = |v: &Tensor<B, 1>| v.clone().reshape([1, 1, 1, 8]).expand([1, 1, 40, 8]);
    let (rq, rk) = (floats(rope.apply(at(&q))), floats(rope.apply(at(&k))));
    let dot = |i: usize, j: usize| (0..8).map(|c| rq[i * 8 + c] * rk[j * 8 + c]).sum::<f32>();
    for (i, j) in [(3, 0), (10, 7), (39, 36)] {
        assert!((dot(i, j) - dot(3, 0)).abs() < 1e-4, "q at {i}, k at {j}");
    }
    assert!((dot(5, 5) - dot(0, 0)).abs() < 1e-4);
    assert!(
        (dot(9, 0) - dot(3, 0)).abs() > 1e-3,
        "a different distance scores differently"
    );
}
