//! `generate`, `eval`, `export` and `download` end to end on the reference fixture, offline.

mod common;

use std::path::Path;

use common::{fails_env as fails, fixture, ok_env as ok};

/// The fixture's greedy continuation of "Every effort moves you" (reference.json).
const EVERY_EFFORT_20: [u32; 20] = [
    25388, 24282, 24282, 24282, 24282, 25388, 20944, 20944, 2914, 2914, 2914, 2914, 2914, 2914,
    2914, 2914, 34088, 25388, 25388, 25388,
];

#[test]
fn generate_matches_the_reference_continuation() {
    let out = ok(
        &[
            "generate",
            "--model",
            &fixture(),
            "--prompt",
            "Every effort moves you",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new: Vec<u32> = serde_json::from_value(v["new_ids"].clone()).unwrap();
    assert_eq!(new, EVERY_EFFORT_20);
    assert_eq!(v["ids"].as_array().unwrap().len(), 24);
    assert!(v["text"].as_str().unwrap().contains("arche"));
    // Streaming text output is the same continuation.
    let text = ok(
        &[
            "generate",
            "--model",
            &fixture(),
            "--prompt-ids",
            "6109,3626,6100,345",
            "--max-new-tokens",
            "20",
        ],
        &[],
    );
    assert_eq!(text.trim_end_matches('\n'), v["text"].as_str().unwrap());
    // Seeded sampling is repeatable.
    let sample = |seed: &str| {
        ok(
            &[
                "generate",
                "--model",
                &fixture(),
                "--prompt",
                "Hello",
                "--temperature",
                "0.9",
                "--top-k",
                "50",
                "--seed",
                seed,
                "--json",
            ],
            &[],
        )
    };
    assert_eq!(sample("3"), sample("3"));
}

#[test]
fn eval_reports_loss_and_perplexity() {
    let out = ok(
        &[
            "eval",
            "--model",
            &fixture(),
            "--file",
            "assets/data/the-verdict.txt",
            "--context",
            "128",
            "--stride",
            "64",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tokens"], 5144);
    let (loss, ppl) = (
        v["loss"].as_f64().unwrap(),
        v["perplexity"].as_f64().unwrap(),
    );
    // A random model is near-uniform over 50,257 tokens: loss about ln(50257) ≈ 10.8.
    assert!(loss > 9.0 && loss < 14.0, "{loss}");
    assert!((ppl.ln() - loss).abs() < 1e-9);
    let text = ok(
        &[
            "eval",
            "--model",
            &fixture(),
            "--file",
            "assets/data/the-verdict.txt",
            "--context",
            "128",
            "--stride",
            "128",
        ],
        &[],
    );
    assert!(text.contains("perplexity"), "{text}");
}

#[test]
fn hub_ids_resolve_from_a_local_cache_and_miss_clearly() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "e6d25b1bcd29a90e5087a51a63291104d3e2bf5b";
    let repo = cache.path().join("models--fixture--tiny-gpt2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(&fixture()).join(f), snap.join(f)).unwrap();
    }
    let env = [
        ("HF_HUB_CACHE", cache.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let out = ok(
        &[
            "generate",
            "--model",
            "fixture/tiny-gpt2",
            "--prompt-ids",
            "6109,3626,6100,345",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        &env,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new: Vec<u32> = serde_json::from_value(v["new_ids"].clone()).unwrap();
    assert_eq!(new, EVERY_EFFORT_20);

    let err = fails(
        &["generate", "--model", "gpt2-medium", "--prompt", "x"],
        &env,
    );
    assert!(
        err.contains("cargo xtask download --model gpt2-medium"),
        "{err}"
    );
    let err = fails(&["download", "--model", "gpt2"], &env);
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn export_then_reload_gives_the_same_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("exported");
    ok(
        &[
            "export",
            "--model",
            &fixture(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out_dir.join("model.safetensors").is_file() && out_dir.join("config.json").is_file());
    let out = ok(
        &[
            "generate",
            "--model",
            out_dir.to_str().unwrap(),
            "--prompt-ids",
            "6109,3626,6100,345",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new: Vec<u32> = serde_json::from_value(v["new_ids"].clone()).unwrap();
    assert_eq!(new, EVERY_EFFORT_20);
}

#[test]
fn bad_model_input_is_an_error_not_a_panic() {
    let f = fixture();
    // A prompt longer than the context is not an error: the model sees its last 128
    // tokens, and says so (faults.rs checks the note).
    let long: Vec<String> = (0..129).map(|i| (i + 100).to_string()).collect();
    ok(
        &[
            "generate",
            "--model",
            &f,
            "--prompt-ids",
            &long.join(","),
            "--max-new-tokens",
            "1",
        ],
        &[],
    );
    let err = fails(
        &["generate", "--model", &f, "--prompt-ids", "6109,50257"],
        &[],
    );
    assert!(err.contains("50257"), "{err}");
    let err = fails(
        &["generate", "--model", &f, "--prompt", "a<|endoftext|>"],
        &[],
    );
    assert!(err.contains("<|endoftext|>"), "{err}");
    let err = fails(&["generate", "--model", "assets", "--prompt", "x"], &[]);
    assert!(err.contains("config.json"), "{err}");
    let err = fails(
        &["generate", "--model", "./no/such/dir", "--prompt", "x"],
        &[],
    );
    assert!(err.contains("./no/such/dir"), "{err}");
    let err = fails(
        &[
            "generate",
            "--model",
            &f,
            "--prompt",
            "x",
            "--backend",
            "tpu",
        ],
        &[],
    );
    assert!(err.contains("tpu"), "{err}");
    let err = fails(
        &[
            "generate",
            "--model",
            &f,
            "--prompt",
            "x",
            "--backend",
            "cuda",
        ],
        &[],
    );
    assert!(err.contains("--features cuda"), "{err}");
    let err = fails(
        &[
            "eval",
            "--model",
            &f,
            "--file",
            "assets/data/the-verdict.txt",
            "--context",
            "500",
        ],
        &[],
    );
    assert!(
        err.contains("--context") && err.contains("n_positions (128)"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(Path::new(&f).join("config.json"), bad.join("config.json")).unwrap();
    std::fs::write(bad.join("model.safetensors"), b"garbage").unwrap();
    let err = fails(
        &[
            "generate",
            "--model",
            bad.to_str().unwrap(),
            "--prompt",
            "x",
        ],
        &[],
    );
    assert!(err.contains("model.safetensors"), "{err}");
    fails(&["generate", "--model", &f], &[]);
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_runs_several_prompts_in_one_batch() {
    let f = fixture();
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            &f,
            "--max-new-tokens",
            "20",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_lines(&ok(&args, &[]))
    };
    let batch = gen(&[
        "--prompt-ids",
        "6109,3626,6100,345",
        "--prompt-ids",
        "15496,11",
    ]);
    assert_eq!(batch.len(), 2);
    let first: Vec<u32> = serde_json::from_value(batch[0]["new_ids"].clone()).unwrap();
    assert_eq!(first, EVERY_EFFORT_20);
    assert_eq!(batch[0]["finish_reason"], "length");
    // Each prompt's continuation is its continuation alone, and a prompts file is the same.
    assert_eq!(gen(&["--prompt-ids", "15496,11"])[0], batch[1]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.jsonl");
    std::fs::write(
        &file,
        "{\"prompt_ids\": [6109, 3626, 6100, 345]}\n\n{\"prompt\": \"Hello,\"}\n",
    )
    .unwrap();
    assert_eq!(gen(&["--prompts-file", file.to_str().unwrap()]), batch);
    // One slot at a time gives the same outputs.
    let one = gen(&[
        "--prompts-file",
        file.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert_eq!(one, batch);
    // An f16 KV cache keeps these greedy continuations.
    let f16 = gen(&[
        "--prompts-file",
        file.to_str().unwrap(),
        "--kv-cache",
        "f16",
    ]);
    assert_eq!(f16, batch);
    // A stop string ends the text before it.
    let stopped = gen(&["--prompt-ids", "6109,3626,6100,345", "--stop", "arche"]);
    let text = stopped[0]["text"].as_str().unwrap();
    assert_eq!(stopped[0]["finish_reason"], "stop");
    let full = batch[0]["text"].as_str().unwrap();
    assert_eq!(text, &full[..full.find("arche").unwrap()]);
    // Bad input names the line or the flag.
    std::fs::write(&file, "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n").unwrap();
    let err = fails(
        &[
            "generate",
            "--model",
            &f,
            "--prompts-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("prompts.jsonl:2"), "{err}");
    let err = fails(
        &["generate", "--model", &f, "--prompt", "x", "--top-p", "0"],
        &[],
    );
    assert!(err.contains("--top-p"), "{err}");
}

#[test]
fn quantize_writes_int8_weights_that_load_back() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8");
    let q8 = out.to_str().unwrap();
    let said = ok(&["quantize", "--model", &f, "--out", q8], &[]);
    assert!(said.contains("int8"), "{said}");
    assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
    let gen = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "Every effort moves you",
        ];
        args.extend_from_slice(&["--max-new-tokens", "12", "--json"]);
        args.extend_from_slice(extra);
        json_lines(&ok(&args, &[]))
    };
    assert_eq!(gen(q8, &[]), gen(&f, &["--quant", "q8"]));
    let err = fails(
        &["generate", "--model", q8, "--prompt", "x", "--quant", "f32"],
        &[],
    );
    assert!(err.contains("int8"), "{err}");
    // int8 perplexity on a text is within 1% of f32's; the saved int8 model scores the same.
    let ppl = |model: &str, quant: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--file",
            "assets/data/the-verdict.txt",
            "--context",
            "128",
            "--stride",
            "64",
            "--json",
        ];
        args.extend_from_slice(quant);
        let v: serde_json::Value = serde_json::from_str(&ok(&args, &[])).unwrap();
        v["perplexity"].as_f64().unwrap()
    };
    let (p32, p8) = (ppl(&f, &["--quant", "f32"]), ppl(&f, &["--quant", "q8"]));
    assert!((p8 / p32 - 1.0).abs() < 0.01, "{p8} vs {p32}");
    assert_eq!(ppl(q8, &[]), p8);
    // --agreement runs the f32 weights too and reports greedy-token agreement.
    let said = ok(
        &[
            "eval",
            "--model",
            &f,
            "--file",
            "assets/data/the-verdict.txt",
            "--context",
            "128",
            "--quant",
            "q8",
            "--agreement",
        ],
        &[],
    );
    assert!(said.contains("greedy-token agreement with f32"), "{said}");
}
