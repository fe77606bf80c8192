//! `cargo xtask viz`: attention pictures of the fixture, run plots, and bad input.

mod common;

use common::{fails, fixture, ok};
use serde_json::Value;

const SEED_TEXT: &str = "The gold trophy would not fit in the brown suitcase because it was too large. I needed a larger";

#[test]
fn viz_attention_writes_every_output_for_the_chosen_layer_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("viz");
    let fixture = fixture();
    let printed = ok(&[
        "viz",
        "attention",
        "--model",
        &fixture,
        "--text",
        SEED_TEXT,
        "--layer",
        "-1",
        "--heads",
        "1,3",
        "--out",
        out.to_str().unwrap(),
    ]);
    for name in [
        "attention.json",
        "summary.json",
        "layer-1.png",
        "layer-1-head-1.png",
        "layer-1-head-3.png",
        "attention.html",
    ] {
        assert!(out.join(name).is_file(), "no {name}");
        assert!(printed.contains(name), "{name} not listed: {printed}");
    }
    assert!(!out.join("layer-0.png").exists());
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("attention.json")).unwrap()).unwrap();
    assert_eq!(json["layers"], serde_json::json!([1]));
    assert_eq!(json["heads"], serde_json::json!([1, 3]));
    assert_eq!(json["model"]["n_layer"], 2);
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["heads"].as_array().unwrap().len(),
        8,
        "every head of every layer"
    );

    // Token ids work too, and `all` writes every layer.
    ok(&[
        "viz",
        "attention",
        "--model",
        &fixture,
        "--prompt-ids",
        "464,3869,16622",
        "--layer",
        "all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("layer-0.png").is_file() && out.join("layer-1-head-0.png").is_file());
}

#[test]
fn viz_bad_input_is_a_clear_error() {
    let fixture = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let attention = |extra: &[&str]| {
        let mut args = vec!["viz", "attention", "--model", &fixture, "--out", &out];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let e = attention(&["--text", "hi", "--layer", "5"]);
    assert!(
        e.contains("layer 5 is out of range") && e.contains("0..=1"),
        "{e}"
    );
    let e = attention(&["--text", "hi", "--layer", "-3"]);
    assert!(e.contains("-2..=-1"), "{e}");
    let e = attention(&["--text", "hi", "--heads", "0,9"]);
    assert!(e.contains("head 9") && e.contains("0..=3"), "{e}");
    let long = "word ".repeat(200);
    let e = attention(&["--text", &long]);
    assert!(e.contains("201 tokens") && e.contains("n_positions"), "{e}");
    let e = attention(&["--prompt-ids", "1,x"]);
    assert!(e.contains("--prompt-ids"), "{e}");

    let e = fails(&["viz", "run", &out]);
    assert!(e.contains("no metrics.jsonl") && e.contains(&out), "{e}");
    let missing = dir.path().join("nope").display().to_string();
    let e = fails(&["viz", "run", &missing]);
    assert!(e.contains("no such run directory"), "{e}");
}

#[test]
fn viz_run_compares_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, loss) in [("a", 5.0), ("b", 4.0)] {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        let lines: String = (1..=5)
            .map(|s| {
                format!(
                    "{{\"step\":{s},\"loss\":{},\"val_loss\":null,\"lr\":0.001,\"grad_norm\":1.0,\"tokens_per_s\":1.0,\"elapsed\":1.0}}\n",
                    loss - s as f64 * 0.1
                )
            })
            .collect();
        std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
    }
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let printed = ok(&["viz", "run", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        printed.contains("compare.png") && printed.contains("compare.svg"),
        "{printed}"
    );
    let svg = std::fs::read_to_string(dir.path().join("compare.svg")).unwrap();
    assert!(svg.contains("a: loss") && svg.contains("b: loss"));
    ok(&["viz", "run", a.to_str().unwrap()]);
    assert!(a.join("metrics.png").is_file());
}
