//! `prepare` and `data-stats` end to end.

mod common;

use common::{fails, ok};

#[test]
fn prepare_then_stats() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("verdict");
    let o = out.to_str().unwrap();
    let text = ok(&[
        "prepare",
        "--input",
        "assets/data/the-verdict.txt",
        "--out",
        o,
        "--shard-tokens",
        "2000",
    ]);
    assert!(
        text.contains("5145 tokens") && text.contains("train 4630 in 3 shard(s)"),
        "{text}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["tokenizer"]["name"], "gpt2");
    assert_eq!(manifest["val"]["tokens"], 515);
    let first = std::fs::read(out.join("train_000000.bin")).unwrap();
    ok(&[
        "prepare",
        "--input",
        "assets/data/the-verdict.txt",
        "--out",
        o,
        "--shard-tokens",
        "2000",
        "--threads",
        "1",
    ]);
    assert_eq!(
        std::fs::read(out.join("train_000000.bin")).unwrap(),
        first,
        "byte-identical on a rerun"
    );

    let stats = ok(&["data-stats", "--input", o]);
    assert!(stats.contains("tokens:          5145"), "{stats}");
    assert!(stats.contains("→"), "{stats}");
    let stats = ok(&[
        "data-stats",
        "--input",
        "assets/data/the-verdict.txt",
        "--top-k",
        "3",
    ]);
    assert!(
        stats.contains("unique tokens:") && stats.contains("top 3 tokens"),
        "{stats}"
    );
}

#[test]
fn bad_corpora_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ok then \xff\xfe").unwrap();
    let out = dir.path().join("out");
    let err = fails(&[
        "prepare",
        "--input",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("bad.txt") && err.contains("byte 8"), "{err}");
    let err = fails(&[
        "prepare",
        "--input",
        "no/such/corpus.txt",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("no/such/corpus.txt"), "{err}");
    let err = fails(&[
        "prepare",
        "--input",
        "assets/data/the-verdict.txt",
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "2",
    ]);
    assert!(err.contains("between 0 and 1"), "{err}");
    let err = fails(&["data-stats", "--input", bad.to_str().unwrap()]);
    assert!(err.contains("bad.txt"), "{err}");
}
