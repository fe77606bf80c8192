//! `cargo xtask eval-mc`: the shipped items on the GPT-2 and Llama fixtures, JSON output,
//! batch sizes that agree, and bad lines named.

mod common;

use common::{fails, fixture, ok, repo};
use serde_json::Value;

fn items() -> String {
    repo()
        .join("assets/eval/mc-sample.jsonl")
        .display()
        .to_string()
}

#[test]
fn eval_mc_prints_both_accuracies_and_json_items_in_order() {
    let (model, file) = (fixture(), items());
    let printed = ok(&["eval-mc", "--model", &model, "--file", &file]);
    assert!(
        printed.starts_with("acc 0.")
            && printed.contains("acc_norm 0.")
            && printed.contains("20 items"),
        "{printed}"
    );
    let json = |batch: &str| -> Value {
        let out = ok(&[
            "eval-mc",
            "--model",
            &model,
            "--file",
            &file,
            "--batch-size",
            batch,
            "--json",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let (one, many) = (json("1"), json("64"));
    assert_eq!(one["n"], 20);
    let items = one["items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["label"], (i % 4) as u64, "input order");
        assert_eq!(item["losses"].as_array().unwrap().len(), 4);
        assert_eq!(item["pred"], many["items"][i]["pred"]);
        assert_eq!(item["pred_norm"], many["items"][i]["pred_norm"]);
    }
    assert_eq!(one["acc"], many["acc"]);
    assert_eq!(one["acc_norm"], many["acc_norm"]);
}

#[test]
fn eval_mc_runs_a_llama_with_its_own_tokenizer() {
    let llama = (repo().join("crates/model/tests/fixtures/tiny-llama"))
        .display()
        .to_string();
    let out = ok(&[
        "eval-mc",
        "--model",
        &llama,
        "--file",
        &items(),
        "--limit",
        "4",
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], 4);
}

#[test]
fn a_malformed_items_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": 0}\n{\"ctx\": 1}\n",
    )
    .unwrap();
    let err = fails(&[
        "eval-mc",
        "--model",
        &fixture(),
        "--file",
        path.to_str().unwrap(),
    ]);
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
}
