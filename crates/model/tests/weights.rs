//! Loading, saving and resolving weights: strictness, bad input, round trips, the hub cache.

mod common;

use std::path::Path;

use burn::backend::Flex;
use burn::module::Module;
use common::*;
use llm_model::hub::Hub;
use llm_model::pretrained::{self, ModelSource};
use llm_model::weights::{hf_tensors, load_weights, save_hf_dir, WeightFile};
use llm_model::{generate, Checkpoint, GenerateConfig, Gpt, Gpt2Config, ModelError};
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn logits_of(model: &Gpt<B>) -> Vec<f64> {
    let dev = Default::default();
    let input = ids(&reference()["sequences"][2]["input_ids"]);
    values(model.forward(model.tokens(&[&input], &dev).unwrap()))
}

/// Rewrites the fixture's safetensors with some tensors dropped, added or renamed.
fn rewrite(dst: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

fn load_file(config: &Gpt2Config, path: &Path) -> Result<Gpt<B>, ModelError> {
    load_weights::<B>(config, &WeightFile::open(path)?, &Default::default())
}

#[test]
fn loaded_model_has_the_configured_size() {
    let (model, config) = fixture_model::<B>(&Default::default());
    assert_eq!(model.num_params(), config.num_params());
    let file = WeightFile::open(fixture_dir().join("model.safetensors")).unwrap();
    let in_file: usize = file
        .shapes()
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    assert_eq!(config.num_params(), in_file);
}

#[test]
fn config_that_disagrees_with_the_weights_names_the_tensor_and_shapes() {
    let mut config = Gpt2Config::from_json_file(fixture_dir().join("config.json")).unwrap();
    config.n_positions = 64;
    let err = load_file(&config, &fixture_dir().join("model.safetensors")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("transformer.wpe.weight")
            && msg.contains("[128, 32]")
            && msg.contains("[64, 32]"),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn missing_and_unexpected_tensors_are_errors() {
    let config = Gpt2Config::from_json_file(fixture_dir().join("config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    rewrite(&missing, |t| {
        t.retain(|(k, _, _)| k != "transformer.h.1.mlp.c_fc.bias")
    });
    let err = load_file(&config, &missing).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "transformer.h.1.mlp.c_fc.bias"),
        "{err}"
    );

    let extra = dir.path().join("extra.safetensors");
    rewrite(&extra, |t| {
        t.push((
            "transformer.h.0.attn.rotary.weight".into(),
            vec![2],
            vec![0; 8],
        ))
    });
    let err = load_file(&config, &extra).unwrap_err();
    assert!(
        err.to_string()
            .contains("transformer.h.0.attn.rotary.weight"),
        "{err}"
    );

    // The causal-mask buffers of old checkpoints are skipped, not reported.
    let masks = dir.path().join("masks.safetensors");
    rewrite(&masks, |t| {
        t.push((
            "transformer.h.0.attn.masked_bias".into(),
            vec![1],
            vec![0; 4],
        ))
    });
    load_file(&config, &masks).unwrap();
}

/// Every tensor is checked at load, so a NaN is an error naming the file and the tensor;
/// the values themselves are read at first use (`parity.rs` checks them against
/// transformers).
#[test]
fn tensors_are_checked_at_load_and_read_at_first_use() {
    let config = Gpt2Config::from_json_file(fixture_dir().join("config.json")).unwrap();
    let model = load_file(&config, &fixture_dir().join("model.safetensors")).unwrap();
    assert!(!model.wte.weight.is_initialized(), "read before use");
    assert!(logits_of(&model).iter().all(|v| v.is_finite()));
    assert!(model.wte.weight.is_initialized());

    let dir = tempfile::tempdir().unwrap();
    let nan = dir.path().join("nan.safetensors");
    rewrite(&nan, |t| {
        let (_, _, data) = t
            .iter_mut()
            .find(|(k, _, _)| k == "transformer.h.1.mlp.c_fc.weight")
            .unwrap();
        data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let err = load_file(&config, &nan).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ModelError::NonFinite { tensor, .. } if tensor == "transformer.h.1.mlp.c_fc.weight"),
        "{msg}"
    );
    assert!(msg.contains("nan.safetensors"), "{msg}");
}

#[test]
fn truncated_or_corrupt_files_name_the_file() {
    let config = Gpt2Config::from_json_file(fixture_dir().join("config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let bytes = std::fs::read(fixture_dir().join(name)).unwrap();
        let cut = dir.path().join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let msg = load_file(&config, &cut)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("cut-{name}")), "{msg}");
        let junk = dir.path().join(format!("junk-{name}"));
        std::fs::write(&junk, b"this is not a weight file at all").unwrap();
        let msg = load_file(&config, &junk)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("junk-{name}")), "{msg}");
    }
    let msg = load_file(&config, &dir.path().join("absent.safetensors"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent.safetensors"), "{msg}");
}

#[test]
fn unsupported_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture_dir().join("config.json")).unwrap();
    // A Llama loads (tests/llama.rs); a BERT does not, nor a GPT-2 config naming another
    // architecture.
    for (from, to) in [
        ("\"gpt2\"", "\"bert\""),
        ("GPT2LMHeadModel", "LlamaForCausalLM"),
    ] {
        std::fs::write(dir.path().join("config.json"), text.replace(from, to)).unwrap();
        let err = Gpt2Config::from_json_file(dir.path().join("config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("config.json") && msg.contains(to.trim_matches('"')),
            "{msg}"
        );
    }
}

#[test]
fn token_ids_and_lengths_are_checked() {
    let dev = Default::default();
    let model = Gpt2Config::tiny().init::<B>(&dev).unwrap();
    let err = model.tokens(&[&[1, 50257]], &dev).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::TokenOutOfRange {
                id: 50257,
                vocab_size: 50257
            }
        ),
        "{err}"
    );
    let long = vec![1u32; 129];
    let err = model.tokens(&[&long], &dev).unwrap_err();
    assert!(err.to_string().contains("n_positions = 128"), "{err}");
    // generate() keeps the last n_positions tokens of a long prompt, as it does for text it
    // generates: the same continuation as from those 128 tokens alone.
    let long: Vec<u32> = (0..129).map(|i| (i * 7919) % 50257).collect();
    let config = GenerateConfig {
        max_new_tokens: 3,
        ..Default::default()
    };
    assert_eq!(
        generate(&model, &long, &config, &dev, |_| {}).unwrap(),
        generate(&model, &long[1..], &config, &dev, |_| {}).unwrap()
    );
    assert!(generate(&model, &[], &GenerateConfig::default(), &dev, |_| {}).is_err());
    for (temperature, top_k, words) in [
        (-1.0, None, "temperature"),
        (f32::NAN, None, "temperature"),
        (f32::INFINITY, None, "temperature"),
        (1.0, Some(0), "top_k"),
    ] {
        let bad = GenerateConfig {
            temperature,
            top_k,
            ..Default::default()
        };
        let err = generate(&model, &[1, 2], &bad, &dev, |_| {}).unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
    }
    assert!(model.tokens(&[&[1, 2], &[3]], &dev).is_err());
}

#[test]
fn kv_cache_overflow_is_an_error_and_generation_slides() {
    let dev = Default::default();
    let (model, _) = fixture_model::<B>(&dev);
    let mut cache = model.new_cache();
    let prompt: Vec<u32> = (0..100).collect();
    model
        .forward_with(
            model.tokens(&[&prompt], &dev).unwrap(),
            Some(&mut cache),
            Default::default(),
        )
        .unwrap();
    let err = model
        .forward_with(
            model.tokens(&[&prompt[..29]], &dev).unwrap(),
            Some(&mut cache),
            Default::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, ModelError::ContextOverflow { len: 129, .. }),
        "{err}"
    );
    assert_eq!(
        cache.len(),
        100,
        "a failed forward leaves the cache as it was"
    );
    // Generation past n_positions crops the context and goes on.
    let config = GenerateConfig {
        max_new_tokens: 60,
        ..Default::default()
    };
    let new = generate(&model, &prompt, &config, &dev, |_| {}).unwrap();
    assert_eq!(new.len(), 60);
}

#[test]
fn stop_token_ends_generation() {
    let dev = Default::default();
    let (model, _) = fixture_model::<B>(&dev);
    let g = &reference()["generation"][0];
    let want = ids(&g["new_tokens"]);
    let stop = want[3];
    let config = GenerateConfig {
        max_new_tokens: 20,
        stop_token: Some(stop),
        ..Default::default()
    };
    let new = generate(&model, &ids(&g["prompt"]), &config, &dev, |_| {}).unwrap();
    let first = want.iter().position(|&t| t == stop).unwrap();
    assert_eq!(new, want[..=first]);
}

#[test]
fn sampling_is_seeded() {
    let dev = Default::default();
    let (model, _) = fixture_model::<B>(&dev);
    let run = |seed| {
        let config = GenerateConfig {
            max_new_tokens: 12,
            temperature: 1.0,
            top_k: Some(40),
            seed,
            ..Default::default()
        };
        generate(&model, &[6109, 3626, 6100, 345], &config, &dev, |_| {}).unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn export_round_trip_passes_parity_again() {
    let dev = Default::default();
    let (model, config) = fixture_model::<B>(&dev);
    let dir = tempfile::tempdir().unwrap();
    save_hf_dir(&model, &config, dir.path()).unwrap();
    // Same keys and shapes as the fixture's own model.safetensors.
    let ours = WeightFile::open(dir.path().join("model.safetensors")).unwrap();
    let theirs = WeightFile::open(fixture_dir().join("model.safetensors")).unwrap();
    assert_eq!(ours.shapes(), theirs.shapes());
    let (reloaded, config2) = pretrained::load_hf_dir::<B>(dir.path(), &dev).unwrap();
    assert_eq!(config2, config);
    assert_eq!(logits_of(&reloaded), logits_of(&model));
    // And against the reference itself.
    let seq = &reference()["sequences"][2];
    let want = floats(&seq["logits"]["last"]);
    let got = logits_of(&reloaded);
    let d = max_abs_diff(&got[got.len() - want.len()..], &want);
    assert!(d <= 1e-4, "{d:e}");
    assert_eq!(hf_tensors(&reloaded).len(), 2 + 2 * 12 + 2);
}

#[test]
fn checkpoint_round_trip_and_bad_checkpoints() {
    let dev = Default::default();
    let (model, config) = fixture_model::<B>(&dev);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.ckpt");
    let mut ckpt = Checkpoint::from_model(&model).unwrap();
    ckpt.metadata = serde_json::json!({"tokenizer": "gpt2"});
    ckpt.save(&path).unwrap();
    assert!(Checkpoint::is_checkpoint(&path));
    let source = pretrained::locate(path.to_str().unwrap(), &Hub::new(dir.path(), true)).unwrap();
    assert_eq!(source, ModelSource::Checkpoint(path.clone()));
    let (loaded, config2) = pretrained::load::<B>(&source, &dev).unwrap();
    assert_eq!(config2, config);
    assert_eq!(logits_of(&loaded), logits_of(&model));
    assert_eq!(
        Checkpoint::load(&path).unwrap().metadata["tokenizer"],
        "gpt2"
    );
    // Only the checkpoint itself is in the directory: no temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.ckpt");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let msg = Checkpoint::load(&cut).unwrap_err().to_string();
    assert!(
        msg.contains("cut.ckpt") && msg.contains("truncated"),
        "{msg}"
    );
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    std::fs::write(&cut, &wrong).unwrap();
    let msg = Checkpoint::load(&cut).unwrap_err().to_string();
    assert!(msg.contains("magic"), "{msg}");
    let mut version = bytes;
    version[8] = 9;
    std::fs::write(&cut, &version).unwrap();
    let msg = Checkpoint::load(&cut).unwrap_err().to_string();
    assert!(msg.contains("version 9"), "{msg}");
}

/// Lays the fixture out as a hub cache, the way a download leaves it.
fn fixture_cache(root: &Path) -> &'static str {
    let commit = "e6d25b1bcd29a90e5087a51a63291104d3e2bf5b";
    let repo = root.join("models--fixture--tiny-gpt2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir().join(f), snap.join(f)).unwrap();
    }
    commit
}

#[test]
fn hub_ids_resolve_from_the_cache_offline() {
    let dev = Default::default();
    let cache = tempfile::tempdir().unwrap();
    let commit = fixture_cache(cache.path());
    let hub = Hub::new(cache.path(), true);
    let source = pretrained::locate("fixture/tiny-gpt2", &hub).unwrap();
    let dir = source.dir().unwrap().to_path_buf();
    assert!(dir.ends_with(commit), "{}", dir.display());
    let (model, _) = pretrained::load::<B>(&source, &dev).unwrap();
    let (fixture, _) = fixture_model::<B>(&dev);
    assert_eq!(logits_of(&model), logits_of(&fixture));
    assert!(hub
        .cached("fixture/tiny-gpt2", "pytorch_model.bin")
        .is_none());

    // A miss, offline: a clear error that says how to get the model.
    let err = pretrained::locate("openai-community/gpt2", &hub)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cargo xtask download --model openai-community/gpt2"),
        "{err}"
    );
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
    assert!(hub.download("gpt2", false).is_err());
    // A path that does not exist is not mistaken for a hub id.
    let err = pretrained::locate("./no/such/model", &hub)
        .unwrap_err()
        .to_string();
    assert!(err.contains("./no/such/model"), "{err}");
}

#[test]
fn perplexity_of_one_window_is_the_reference_loss() {
    let dev = Default::default();
    let (model, _) = fixture_model::<B>(&dev);
    let seq = &reference()["sequences"][5]; // rand_len128: fills the context
    let input = ids(&seq["input_ids"]);
    let want = seq["loss"].as_f64().unwrap();
    let p = llm_model::perplexity(&model, &input, 128, 128, 4, &dev).unwrap();
    assert_eq!((p.tokens, p.windows), (127, 1));
    assert!(rel_err(p.loss, want) < 1e-5, "{} vs {want}", p.loss);
    assert!((p.perplexity - want.exp()).abs() / want.exp() < 1e-4);
    // Overlapping windows still score each token once; batching does not change the result.
    let a = llm_model::perplexity(&model, &input, 64, 16, 1, &dev).unwrap();
    let b = llm_model::perplexity(&model, &input, 64, 16, 8, &dev).unwrap();
    assert_eq!(a.tokens, 127);
    assert!((a.loss - b.loss).abs() < 1e-5);
    assert!(llm_model::perplexity(&model, &input, 256, 16, 1, &dev).is_err());
    assert!(llm_model::perplexity(&model, &input[..1], 64, 16, 1, &dev).is_err());
}
