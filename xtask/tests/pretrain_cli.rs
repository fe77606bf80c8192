//! `cargo xtask pretrain` as a user runs it: a short run, resume, config errors, and the
//! signals (Ctrl-C saves and exits; `kill -9` leaves a loadable checkpoint).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(repo()).env("RUST_LOG", "warn");
    c
}

fn run(args: &[&str]) -> Output {
    xtask().args(args).output().unwrap()
}

/// A tiny recipe on the-verdict, as a file.
fn tiny_recipe(dir: &Path, max_steps: usize) -> PathBuf {
    let path = dir.join("tiny.json");
    let recipe = serde_json::json!({
        "model": {"preset": "tiny", "n_positions": 32, "dropout": 0.0},
        "data": {"inputs": ["assets/data/the-verdict.txt"]},
        "optimizer": {"lr": 3e-3},
        "schedule": {"max_steps": max_steps, "warmup_steps": 2, "min_lr": 3e-4},
        "run": {"name": "tiny", "batch_size": 2, "eval_every": 0, "eval_batches": 1,
                "sample_every": 0, "sample_tokens": 3, "checkpoint_every": 1, "keep_last": 2}
    });
    std::fs::write(&path, serde_json::to_string_pretty(&recipe).unwrap()).unwrap();
    path
}

fn newest_checkpoint(run: &Path) -> Option<(usize, PathBuf)> {
    let mut all: Vec<(usize, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))
        .ok()?
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
    all.pop()
}

/// Waits until the run has a checkpoint of at least `step`.
fn wait_for_step(child: &mut Child, run: &Path, step: usize) {
    let start = Instant::now();
    while newest_checkpoint(run).is_none_or(|(s, _)| s < step) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint {step} after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `pretrain --config recipe --out out` in the background, its output to `stdio()`.
fn spawn_pretrain(recipe: &Path, out: &Path, stdio: fn() -> Stdio) -> Child {
    xtask()
        .args([
            "pretrain",
            "--config",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn pretrain_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 3);
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
    let recipe = tiny_recipe(tmp.path(), 3);
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
    let recipe = tiny_recipe(tmp.path(), 100_000);
    let out = tmp.path().join("run");
    let mut child = spawn_pretrain(&recipe, &out, Stdio::piped);
    wait_for_step(&mut child, &out, 2);
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
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

#[test]
fn kill_9_leaves_the_latest_checkpoint_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 100_000);
    // Kill at a few different moments: likely mid-step, mid-save, between saves.
    for (i, delay_ms) in [0u64, 7, 23].into_iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let mut child = spawn_pretrain(&recipe, &out, Stdio::null);
        wait_for_step(&mut child, &out, 3);
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&child, "-KILL");
        child.wait().unwrap();
        let (step, ckpt) = newest_checkpoint(&out).unwrap();
        let loaded = llm_model::Checkpoint::load(&ckpt).unwrap();
        assert_eq!(loaded.metadata["step"].as_u64(), Some(step as u64));
        let more = (step + 1).to_string();
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
}
