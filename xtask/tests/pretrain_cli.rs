//! `cargo xtask pretrain` as a user runs it: a short run, resume, config errors, and Ctrl-C
//! (it saves and exits). `kill -9` at exact moments is in `faults.rs`.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn pretrain_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 3, serde_json::json!({}));
    let out = tmp.path().join("run");
    let first = run(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("finished after 3 steps"), "{stdout}");
    // The evaluation at the last step drew the run's curves.
    for plot in ["metrics.png", "metrics.svg"] {
        assert!(out.join(plot).is_file(), "no {plot} in the run directory");
    }
    assert!(stdout.contains("cargo xtask pretrain --resume"), "{stdout}");
    // Starting again in the same place is refused; resuming with more steps continues.
    let again = run(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let resumed = run(&[
        "pretrain",
        "--resume",
        out.to_str().unwrap(),
        "--max-steps",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(stdout.contains("finished after 5 steps"), "{stdout}");
    // The checkpoint is a model `generate` can use, with the tokenizer it recorded.
    let ckpt = newest_checkpoint(&out).unwrap().1;
    let gen = run(&[
        "generate",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        "I had",
        "--max-new-tokens",
        "3",
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    // It prints the continuation: three tokens of a barely trained model.
    assert!(!String::from_utf8_lossy(&gen.stdout).trim().is_empty());
}

#[test]
fn pretrain_config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 3, serde_json::json!({}));
    let out = run(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--set",
        "optimizer.learning_rate=1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("optimizer.learning_rate"), "{err}");
    let out = run(&["pretrain", "--config", "configs/no-such.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("configs/no-such.json"),
        "{err}"
    );
    let out = run(&["pretrain", "--resume", tmp.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a run directory"),
        "{err}"
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 100_000, serde_json::json!({}));
    let out = tmp.path().join("run");
    let mut child = xtask()
        .args([
            "pretrain",
            "--config",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &out, 2);
    let output = interrupt(child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("interrupted after"), "{stdout}");
    // The step it stopped at is saved (every step is, here) and the run continues from it.
    let (step, ckpt) = newest_checkpoint(&out).unwrap();
    assert!(
        stdout.contains(&format!("interrupted after {step} steps")),
        "{stdout}"
    );
    llm_model::Checkpoint::load(&ckpt).unwrap();
    let more = (step + 2).to_string();
    let resumed = run(&[
        "pretrain",
        "--resume",
        out.to_str().unwrap(),
        "--max-steps",
        &more,
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}
