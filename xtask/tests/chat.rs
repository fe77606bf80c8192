//! `cargo xtask chat` on the checkpoint `cargo xtask finetune --task instruct` writes:
//! the Alpaca template it recorded, streamed answers, `/reset`, `/quit`, and a
//! conversation longer than the context.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/model/tests/fixtures/tiny-gpt2")
}

/// xtask, run from the repository root (where the recipes and data are).
fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn chat_uses_the_instruct_template_and_keeps_within_the_context() {
    let run = tempfile::tempdir().unwrap();
    let out = xtask()
        .args(["finetune", "--task", "instruct", "--max-steps", "1"])
        .arg("--model")
        .arg(fixture_dir())
        .arg("--out")
        .arg(run.path())
        .args([
            "--set",
            "run.eval_batches=1",
            "--set",
            "instruct.max_new_tokens=1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut chat = xtask()
        .args(["chat", "--max-new-tokens", "40", "--temperature", "0"])
        .arg("--model")
        .arg(run.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Six 40-token answers overflow the fixture's 128-token context: old turns must go.
    let input = "Name a colour.\nAnd another?\n/reset\nOne\nTwo\nThree\nFour\n/quit\nnever read\n";
    chat.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chat template: alpaca"), "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    let answers = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        answers, 6,
        "one streamed answer per question, none after /quit"
    );
}
