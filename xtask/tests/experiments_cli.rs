//! Experiments from the command line: a sweep that resumes and tabulates, and a Llama
//! checkpoint through `generate` and `finetune`.

mod common;

use common::{chat, fails, finetune_instruct, ok, repo, steps, tiny_recipe};
use serde_json::Value;

fn llama() -> String {
    repo()
        .join("crates/model/tests/fixtures/tiny-llama")
        .display()
        .to_string()
}

/// Two grid points of a one-layer model, 2 steps each: run dirs, tables, plot; a second run
/// keeps the finished points; --only and unknown keys are checked.
#[test]
fn a_sweep_runs_each_point_once_and_tabulates_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_recipe(dir.path(), 2, serde_json::json!({"run": {"eval_every": 2}}));
    let spec = dir.path().join("sweep.json");
    let sweep = serde_json::json!({
        "base": base.file_name().unwrap().to_str().unwrap(),
        "set": {"model.n_layer": 1},
        "grid": {"model.n_kv_head": [1, 4]}
    });
    std::fs::write(&spec, sweep.to_string()).unwrap();
    let out = dir.path().join("out");
    let (spec_s, out_s) = (spec.to_str().unwrap(), out.to_str().unwrap());
    let printed = ok(&["sweep", "--config", spec_s, "--out", out_s]);
    assert!(printed.contains("2 of 2 points done"), "{printed}");
    for name in [
        "sweep.md",
        "sweep.csv",
        "val_loss.png",
        "val_loss.svg",
        "n_kv_head=1/metrics.jsonl",
        "n_kv_head=4/sweep-point.json",
    ] {
        assert!(out.join(name).is_file(), "no {name}");
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "name,overrides,params,tokens_per_s,peak_rss_mib,val_loss,wall_s"
    );
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(
        rows[1].starts_with("n_kv_head=1,\"model.n_kv_head=1\","),
        "{csv}"
    );
    let point: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("n_kv_head=1/sweep-point.json")).unwrap(),
    )
    .unwrap();
    assert!(point["peak_rss_mib"].as_f64().unwrap() > 10.0, "{point}");
    assert!(point["val_loss"].as_f64().unwrap() > 0.0, "{point}");
    // MQA has fewer parameters than MHA at the same width.
    let params = |row: &str| row.split(',').nth(2).unwrap().parse::<u64>().unwrap();
    assert!(params(rows[1]) < params(rows[2]), "{csv}");

    // Run again: nothing to train, the same table.
    let again = ok(&["sweep", "--config", spec_s, "--out", out_s]);
    assert!(!again.contains("== sweep point"), "{again}");
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);

    let e = fails(&[
        "sweep", "--config", spec_s, "--out", out_s, "--only", "nope",
    ]);
    assert!(e.contains("nope"), "{e}");
    std::fs::write(&spec, r#"{"base": "x.json", "pionts": []}"#).unwrap();
    let e = fails(&["sweep", "--config", spec_s]);
    assert!(e.contains("pionts"), "{e}");
}

/// An interrupted point resumes where it stopped.
#[test]
fn an_interrupted_sweep_point_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_recipe(dir.path(), 4, serde_json::json!({"run": {"eval_every": 2}}));
    let spec = dir.path().join("one.json");
    let sweep = serde_json::json!({"base": "tiny.json", "points": [{"name": "only"}]});
    std::fs::write(&spec, sweep.to_string()).unwrap();
    let out = dir.path().join("out");
    // A run stopped at step 2, as an interrupted sweep leaves it.
    let point = out.join("only");
    ok(&[
        "pretrain",
        "--config",
        base.to_str().unwrap(),
        "--out",
        point.to_str().unwrap(),
        "--stop-at-step",
        "2",
    ]);
    ok(&[
        "sweep",
        "--config",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let steps = steps(&point);
    assert_eq!(steps, [1, 2, 3, 4], "resumed at step 3, not restarted");
}

/// A Llama checkpoint with its own tokenizer: `generate` runs it through the engine (two
/// prompts in one batch, and int8 after `quantize`), `finetune --task instruct` trains it,
/// and `chat` talks to the result.
#[test]
fn a_llama_generates_quantizes_fine_tunes_and_chats_with_the_same_commands() {
    let prompt = "1,427,384,362,404,342";
    let generate = |model: &str| {
        let out = ok(&[
            "generate",
            "--model",
            model,
            "--prompt-ids",
            prompt,
            "--prompt-ids",
            prompt,
            "--max-new-tokens",
            "12",
            "--min-p",
            "0.05",
            "--json",
        ]);
        (out.lines())
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["new_ids"].clone())
            .collect::<Vec<_>>()
    };
    // transformers' greedy tokens for this prompt (fixtures/tiny-llama/reference.json.gz).
    let want = serde_json::json!([399, 313, 289, 467, 247, 440, 467, 76, 51, 71, 25, 45]);
    assert_eq!(generate(&llama()), [want.clone(), want]);
    let int8 = tempfile::tempdir().unwrap();
    let int8_dir = int8.path().join("q8");
    ok(&[
        "quantize",
        "--model",
        &llama(),
        "--out",
        int8_dir.to_str().unwrap(),
    ]);
    let got = generate(int8_dir.to_str().unwrap());
    assert_eq!(got[0].as_array().unwrap().len(), 12, "{got:?}");
    // Its attention draws as a GPT-2's does: one map per query head.
    let viz = tempfile::tempdir().unwrap();
    ok(&[
        "viz",
        "attention",
        "--model",
        &llama(),
        "--text",
        "To be, or not to be",
        "--out",
        viz.path().to_str().unwrap(),
    ]);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(viz.path().join("summary.json")).unwrap())
            .unwrap();
    assert!(summary.to_string().contains("induction"), "{summary}");

    let run = tempfile::tempdir().unwrap();
    finetune_instruct(&llama(), run.path(), 2);
    let metrics = std::fs::read_to_string(run.path().join("metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 2, "{metrics}");
    assert!(last["val_loss"].as_f64().unwrap().is_finite(), "{metrics}");

    let out = chat(run.path(), 8, "Name a colour.\n/quit\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chat template: alpaca"), "{stderr}");
    assert!(!out.stdout.is_empty(), "an answer is printed");
}
