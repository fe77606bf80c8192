//! The tokenizer commands end to end, and the promise that bad input gives an error message
//! and a non-zero exit, never a panic.

mod common;

use common::{fails, ok};

#[test]
fn tokenize_and_detokenize() {
    assert_eq!(
        ok(&["tokenize", "--text", "Hello, world"]).trim(),
        "15496,11,995"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "tokenize",
        "--json",
        "--text",
        "Every effort moves you",
    ]))
    .unwrap();
    assert_eq!(json["ids"], serde_json::json!([6109, 3626, 6100, 345]));
    assert_eq!(json["count"], 4);
    assert_eq!(
        ok(&["detokenize", "--ids", "15496,11,995"]),
        "Hello, world\n"
    );
    let verdict = ok(&[
        "tokenize",
        "--json",
        "--file",
        "assets/data/the-verdict.txt",
    ]);
    let json: serde_json::Value = serde_json::from_str(&verdict).unwrap();
    assert_eq!(json["count"], 5145);
}

#[test]
fn special_tokens_follow_the_policy() {
    let err = fails(&["tokenize", "--text", "a<|endoftext|>b"]);
    assert!(err.contains("<|endoftext|>"), "{err}");
    assert_eq!(
        ok(&[
            "tokenize",
            "--special",
            "allow",
            "--text",
            "a<|endoftext|>b"
        ])
        .trim(),
        "64,50256,65"
    );
    let as_text = ok(&["tokenize", "--special", "text", "--text", "a<|endoftext|>b"]);
    assert!(!as_text.contains("50256"));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let err = fails(&["detokenize", "--ids", "15496,99999"]);
    assert!(err.contains("99999"), "{err}");
    let err = fails(&["detokenize", "--ids", "1,two"]);
    assert!(err.contains("two"), "{err}");
    let err = fails(&["tokenize", "--tokenizer", "/no/such/dir", "--text", "x"]);
    assert!(err.contains("/no/such/dir"), "{err}");
    let err = fails(&["tokenize", "--file", "/no/such/file.txt"]);
    assert!(err.contains("/no/such/file.txt"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let err = fails(&["tokenize", "--file", latin1.to_str().unwrap()]);
    assert!(
        err.contains("latin1.txt") && err.contains("byte 3"),
        "{err}"
    );

    std::fs::write(dir.path().join("vocab.json"), "not json").unwrap();
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\n").unwrap();
    let err = fails(&[
        "tokenize",
        "--tokenizer",
        dir.path().to_str().unwrap(),
        "--text",
        "x",
    ]);
    assert!(err.contains("vocab.json"), "{err}");

    fails(&["tokenize"]);
    fails(&["no-such-command"]);
}

#[test]
fn train_a_tokenizer_and_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shakespeare-512");
    std::fs::create_dir(&out).unwrap();
    let stdout = ok(&[
        "train-tokenizer",
        "--input",
        "assets/data/tinyshakespeare.txt",
        "--vocab-size",
        "512",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("trained 512 tokens"), "{stdout}");
    let json = out.join("tokenizer.json");
    assert!(json.is_file());
    let ids = ok(&[
        "tokenize",
        "--tokenizer",
        json.to_str().unwrap(),
        "--text",
        "ROMEO: hello",
    ]);
    let back = ok(&[
        "detokenize",
        "--tokenizer",
        out.to_str().unwrap(),
        "--ids",
        ids.trim(),
    ]);
    assert_eq!(back, "ROMEO: hello\n");
    let err = fails(&[
        "train-tokenizer",
        "--input",
        "assets/data/the-verdict.txt",
        "--vocab-size",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("vocab_size 10"), "{err}");
}
