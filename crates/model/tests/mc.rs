//! Multiple-choice scoring against PyTorch on the GPT-2 fixture
//! (`fixtures/tiny-gpt2/mc_reference.py` made `mc_reference.json`): per-ending losses to
//! 1e-4, the same predictions, and batches that give the numbers of one row at a time.

mod common;

use burn::backend::Flex;
use common::{fixture_dir, fixture_model, floats};
use llm_bpe::Tokenizer;
use llm_model::mc::{read_items, score_items, McSummary};
use serde_json::Value;

type B = Flex;

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn ending_losses_match_pytorch_and_batching_changes_nothing() {
    let dev = Default::default();
    let (model, _) = fixture_model::<B>(&dev);
    let tok = Tokenizer::gpt2();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("mc_reference.json")).unwrap(),
    )
    .unwrap();
    let items = read_items(&repo_file("assets/eval/mc-sample.jsonl")).unwrap();
    assert_eq!(items.len(), 20);
    let first6 = &items[..6];

    let one_by_one = score_items(&model, &tok, first6, 1, &dev).unwrap();
    let batched = score_items(&model, &tok, first6, 7, &dev).unwrap();
    for (i, (got, want)) in one_by_one
        .iter()
        .zip(reference["items"].as_array().unwrap())
        .enumerate()
    {
        for (key, ours) in [
            ("sum_losses", &got.losses),
            ("mean_losses", &got.mean_losses),
        ] {
            let theirs = floats(&want[key]);
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 1e-4, "item {i} {key}: {a} against {b}");
            }
        }
        assert_eq!(got.pred as u64, want["pred"].as_u64().unwrap(), "item {i}");
        assert_eq!(
            got.pred_norm as u64,
            want["pred_norm"].as_u64().unwrap(),
            "item {i}"
        );
        let b = &batched[i];
        assert_eq!(
            (b.pred, b.pred_norm),
            (got.pred, got.pred_norm),
            "item {i} batched"
        );
        for (x, y) in b.losses.iter().zip(&got.losses) {
            assert!((x - y).abs() < 1e-5, "item {i}: batched {x}, alone {y}");
        }
    }
    let summary = McSummary::of(&one_by_one);
    assert_eq!(summary.n, 6);
    assert_eq!(summary.acc, reference["acc"].as_f64().unwrap());
    assert_eq!(summary.acc_norm, reference["acc_norm"].as_f64().unwrap());
}

#[test]
fn a_malformed_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.jsonl");
    let good = r#"{"ctx": "A", "endings": ["b", "c"], "label": 1}"#;
    for (bad, says) in [
        (r#"{"ctx": "A", "endings": "b", "label": 0}"#, "line 2"),
        (
            r#"{"ctx": "A", "endings": ["b"], "label": 3}"#,
            "\"label\" 3",
        ),
        ("not json", "line 2"),
    ] {
        std::fs::write(&path, format!("{good}\n{bad}\n")).unwrap();
        let e = read_items(&path).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("items.jsonl"), "{e}");
    }
}
