//! Helpers shared by the CLI tests: they run the real `xtask` binary from the repository
//! root, as a user would.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod fake_hub;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny GPT-2 fixture (a Hugging Face directory).
pub fn fixture() -> String {
    repo()
        .join("crates/model/tests/fixtures/tiny-gpt2")
        .display()
        .to_string()
}

/// The binary, in the repository root, logging warnings and errors only.
pub fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(repo()).env("RUST_LOG", "warn");
    c
}

pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = xtask();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_env(args, env);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

pub fn ok(args: &[&str]) -> String {
    ok_env(args, &[])
}

/// Runs a command that must fail cleanly (non-zero exit, no panic) and returns its stderr.
pub fn fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_env(args, env);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

pub fn fails(args: &[&str]) -> String {
    fails_env(args, &[])
}

/// A tiny pre-training recipe on the-verdict, written to `dir/tiny.json`: a checkpoint
/// every step, no evaluation or samples unless `extra` (a JSON object merged per section)
/// says otherwise.
pub fn tiny_recipe(dir: &Path, max_steps: usize, extra: serde_json::Value) -> PathBuf {
    let path = dir.join("tiny.json");
    let mut recipe = serde_json::json!({
        "model": {"preset": "tiny", "n_positions": 32, "dropout": 0.0},
        "data": {"inputs": ["assets/data/the-verdict.txt"]},
        "optimizer": {"lr": 3e-3},
        "schedule": {"max_steps": max_steps, "warmup_steps": 2, "min_lr": 3e-4},
        "run": {"name": "tiny", "batch_size": 2, "eval_every": 0, "eval_batches": 1,
                "sample_every": 0, "sample_tokens": 3, "checkpoint_every": 1, "keep_last": 2}
    });
    for (section, values) in extra.as_object().into_iter().flatten() {
        for (k, v) in values.as_object().unwrap() {
            recipe[section][k] = v.clone();
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&recipe).unwrap()).unwrap();
    path
}

/// The step checkpoints of a run, oldest first.
pub fn step_checkpoints(run: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut all: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let step = name
                .strip_prefix("step_")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()?;
            Some((step, path))
        })
        .collect();
    all.sort();
    all
}

pub fn newest_checkpoint(run: &Path) -> Option<(usize, PathBuf)> {
    step_checkpoints(run).pop()
}

/// Every file name in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The `loss` of every line of a run's metrics.jsonl, by step.
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Waits until the run has a checkpoint of at least `step`.
pub fn wait_for_step(child: &mut std::process::Child, run: &Path, step: usize) {
    let start = std::time::Instant::now();
    while newest_checkpoint(run).is_none_or(|(s, _)| s < step) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no checkpoint {step} after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends Ctrl-C (SIGINT) to a child and returns its output.
pub fn interrupt(child: std::process::Child) -> Output {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

/// A base model pre-trained for 2 steps by the tiny recipe, with `model` overrides;
/// returns its run directory.
pub fn tiny_base(dir: &Path, name: &str, model: serde_json::Value) -> PathBuf {
    let recipe = tiny_recipe(dir, 2, serde_json::json!({ "model": model }));
    let base = dir.join(name);
    ok(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    base
}

/// The `step` of every line of a run's metrics.jsonl, in order.
pub fn steps(run: &Path) -> Vec<u64> {
    losses(run).into_iter().map(|(step, _)| step).collect()
}

/// `finetune --task instruct` of `model` for `steps` steps into `run`, with one eval batch
/// and one-token samples; it must succeed.
pub fn finetune_instruct(model: &str, run: &Path, steps: usize) {
    ok(&[
        "finetune",
        "--task",
        "instruct",
        "--max-steps",
        &steps.to_string(),
        "--model",
        model,
        "--out",
        run.to_str().unwrap(),
        "--set",
        "run.eval_batches=1",
        "--set",
        "instruct.max_new_tokens=1",
    ]);
}

/// `chat --temperature 0` on `model`, fed `input` on stdin; returns its output.
pub fn chat(model: &Path, max_new_tokens: usize, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut chat = xtask()
        .args(["chat", "--temperature", "0", "--max-new-tokens"])
        .arg(max_new_tokens.to_string())
        .arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    chat.wait_with_output().unwrap()
}
