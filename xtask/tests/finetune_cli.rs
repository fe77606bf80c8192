//! `cargo xtask finetune` and `cargo xtask classify`, end to end on the tiny fixture and a
//! small slice of the SMS Spam Collection.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// `n_embd` of the GPT-2 fixture (`crates/model/tests/fixtures/tiny-gpt2`).
const FIXTURE_WIDTH: usize = 32;

/// The first `ham` ham and `spam` spam lines of the real collection, in a temporary file.
fn sms_slice(dir: &Path, ham: usize, spam: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("assets/data/SMSSpamCollection.tsv")).unwrap();
    let pick = |label: &str, n: usize| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{label}\t")))
            .take(n)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let path = dir.join("sms.tsv");
    std::fs::write(&path, pick("ham", ham) + &pick("spam", spam)).unwrap();
    path
}

/// `finetune --task classify` on the fixture with 20 + 20 messages (28 train, batch 4: 7
/// steps an epoch), plus `extra` flags; returns the `--json` line.
fn classify_run(dir: &Path, run: &str, extra: &[&str]) -> Value {
    let sms = sms_slice(dir, 30, 20);
    let out = dir.join(run);
    let (sms, out) = (sms.display().to_string(), out.display().to_string());
    let fixture = fixture();
    let mut args = vec![
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture,
        "--out",
        &out,
        "--json",
        "--set",
        "run.batch_size=4",
        "--set",
        "epochs=1",
        "--set",
        "optimizer.lr=1e-3",
    ];
    let data = format!("data.path={sms}");
    args.extend(["--set", &data]);
    args.extend(extra);
    let stdout = ok(&args);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn classify_trains_reports_every_measure_and_labels_texts() {
    let dir = tempfile::tempdir().unwrap();
    let report = classify_run(dir.path(), "run", &[]);
    assert_eq!(report["task"], "classify");
    assert_eq!(report["steps"], 7);
    for key in [
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "test_loss",
        "val_loss",
    ] {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"));
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    // The last block, ln_f and the head train; the rest is frozen.
    let (trainable, total) = (
        report["trainable_params"].as_u64().unwrap(),
        report["total_params"].as_u64().unwrap(),
    );
    let w = FIXTURE_WIDTH;
    let block = 12 * w * w + 13 * w; // one block
    assert_eq!(trainable, (block + 2 * w + (w * 2 + 2)) as u64);
    // wte alone is 50,257 × w.
    assert!(total as usize > 50_257 * w, "{total}");
    // Per-epoch measures are in metrics.jsonl.
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(
        last["val_accuracy"].is_number() && last["test_accuracy"].is_number(),
        "{last}"
    );
    // The run keeps a current plot of itself, with the task's accuracy.
    let svg = std::fs::read_to_string(dir.path().join("run/metrics.svg")).unwrap();
    assert!(
        svg.contains("val_accuracy") && svg.contains("accuracy"),
        "metrics.svg"
    );
    assert!(dir.path().join("run/metrics.png").is_file());

    let run = dir.path().join("run").display().to_string();
    let out = ok(&[
        "classify",
        "--model",
        &run,
        "--json",
        "--text",
        "WINNER!! Claim your free prize now",
        "--text",
        "see you at lunch",
    ]);
    let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(
            ["ham", "spam"].contains(&row["label"].as_str().unwrap()),
            "{row}"
        );
        let p = row["probability"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&p), "{row}");
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let sms = sms_slice(tmp.path(), 30, 20);
    let out = tmp.path().join("run");
    let (data, fixture) = (format!("data.path={}", sms.display()), fixture());
    let child = xtask()
        .args(["finetune", "--task", "classify", "--model", &fixture])
        .args(["--out", out.to_str().unwrap(), "--set", &data])
        .args(["--set", "run.batch_size=4", "--set", "epochs=1000"])
        .args([
            "--set",
            "run.checkpoint_every=1",
            "--set",
            "run.eval_every=0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    wait_for_step(&mut child, &out, 2);
    let output = interrupt(child);
    let (stdout, stderr) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (step, _) = newest_checkpoint(&out).unwrap();
    assert!(
        stdout.contains(&format!("interrupted after {step} steps")),
        "{stdout}"
    );
    let more = (step + 1).to_string();
    ok(&[
        "finetune",
        "--resume",
        out.to_str().unwrap(),
        "--max-steps",
        &more,
    ]);
    assert_eq!(newest_checkpoint(&out).unwrap().0, step + 1);
}

#[test]
fn max_steps_zero_evaluates_the_starting_model_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let report = classify_run(dir.path(), "eval", &["--max-steps", "0"]);
    assert_eq!(report["steps"], 0);
    assert!(
        report["test_accuracy"].is_number() && report["val_loss"].is_number(),
        "{report}"
    );
    assert!(step_checkpoints(&dir.path().join("eval")).is_empty());
}

#[test]
fn a_classify_run_resumes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let every = [
        "--set",
        "run.checkpoint_every=1",
        "--set",
        "run.log_every=1",
    ];
    classify_run(dir.path(), "straight", &every);
    let paused = [&every[..], &["--stop-at-step", "3"]].concat();
    classify_run(dir.path(), "paused", &paused);
    let resumed = dir.path().join("paused").display().to_string();
    ok(&["finetune", "--resume", &resumed]);
    assert_eq!(
        losses(&dir.path().join("straight")),
        losses(&dir.path().join("paused"))
    );
    assert_eq!(losses(&dir.path().join("straight")).len(), 7);
}

#[test]
fn lora_trains_only_the_adapters_and_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let report = classify_run(dir.path(), "lora", &["--lora", "2,4"]);
    // Rank 2 on c_attn (w→3w), attn c_proj (w→w), c_fc (w→4w), mlp c_proj (4w→w).
    let w = FIXTURE_WIDTH;
    let per_block = 2 * ((w + 3 * w) + (w + w) + (w + 4 * w) + (4 * w + w));
    let expected = 2 * per_block + (w * 2 + 2);
    assert_eq!(
        report["trainable_params"].as_u64().unwrap(),
        expected as u64
    );
    let run = dir.path().join("lora").display().to_string();
    let out = ok(&["classify", "--model", &run, "--text", "hello there"]);
    assert!(out.starts_with("ham ") || out.starts_with("spam "), "{out}");
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture(),
        "--lora",
        "0",
    ]);
    assert!(err.contains("--lora") && err.contains("rank"), "{err}");
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture(),
        "--set",
        "lora.rank=2",
        "--set",
        "lora.targets=[\"q_proj\"]",
    ]);
    assert!(err.contains("\"q_proj\""), "{err}");
}

#[test]
fn a_tiny_context_truncates_by_the_rule_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    // A base whose context (32) is shorter than many messages.
    let base = tiny_base(dir.path(), "base", serde_json::json!({}));
    let sms = sms_slice(dir.path(), 30, 20).display().to_string();
    let out = dir.path().join("cls").display().to_string();
    let data = format!("data.path={sms}");
    let stdout = ok(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        base.to_str().unwrap(),
        "--out",
        &out,
        "--json",
        "--set",
        &data,
        "--set",
        "run.batch_size=4",
        "--max-steps",
        "2",
    ]);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(report["truncated"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn masked_prompts_longer_than_the_context_are_left_out_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A base whose context (44) is shorter than 16 of these Alpaca prompts (37 to 56 tokens).
    let base = tiny_base(dir.path(), "base", serde_json::json!({"n_positions": 44}));
    let data = format!(
        "data.path={}",
        json_slice(dir.path(), "instruction-data.json", 40).display()
    );
    let out = dir.path().join("masked").display().to_string();
    let stdout = ok(&[
        "finetune",
        "--task",
        "instruct",
        "--model",
        base.to_str().unwrap(),
        "--out",
        &out,
        "--json",
        "--set",
        &data,
        "--set",
        "run.batch_size=4",
        "--set",
        "instruct.mask_prompt=true",
        "--set",
        "instruct.max_new_tokens=2",
        "--max-steps",
        "3",
    ]);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let left_out = report["no_target"].as_f64().unwrap();
    assert!(left_out > 0.0 && left_out < 36.0, "{report}");
    assert!(report["val_loss"].as_f64().unwrap().is_finite(), "{report}");

    // A context no prompt fits in is refused before training, naming the key.
    let short = tiny_base(dir.path(), "short", serde_json::json!({}));
    let err = fails(&[
        "finetune",
        "--task",
        "instruct",
        "--model",
        short.to_str().unwrap(),
        "--set",
        &data,
        "--out",
        dir.path().join("refused").to_str().unwrap(),
        "--set",
        "run.batch_size=4",
        "--set",
        "instruct.mask_prompt=true",
    ]);
    assert!(
        err.contains("instruct.mask_prompt") && err.contains("32-token"),
        "{err}"
    );
}

#[test]
fn bad_data_and_bad_runs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "ham\thello\nspma\tfree money\n").unwrap();
    let data = format!("data.path={}", bad.display());
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture(),
        "--set",
        &data,
    ]);
    assert!(
        err.contains("bad.tsv") && err.contains("line 2") && err.contains("\"spma\""),
        "{err}"
    );
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture(),
        "--set",
        "epochs=0",
    ]);
    assert!(err.contains("epochs"), "{err}");
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        &fixture(),
        "--set",
        "trainable=some",
    ]);
    assert!(
        err.contains("trainable") && err.contains("\"some\""),
        "{err}"
    );
    let err = fails(&["finetune", "--model", &fixture()]);
    assert!(err.contains("--task"), "{err}");

    // A pre-training run cannot be resumed as a classification run, nor the other way.
    let recipe = tiny_recipe(dir.path(), 1, serde_json::json!({}));
    let base = dir.path().join("base");
    ok(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    let cfg = repo()
        .join("configs/finetune-classify.json")
        .display()
        .to_string();
    let err = fails(&[
        "finetune",
        "--resume",
        base.to_str().unwrap(),
        "--config",
        &cfg,
        "--model",
        &fixture(),
    ]);
    assert!(
        err.contains("pretrain run") && err.contains("classify"),
        "{err}"
    );
    classify_run(dir.path(), "cls", &["--max-steps", "1"]);
    let cls = dir.path().join("cls");
    let err = fails(&[
        "pretrain",
        "--resume",
        cls.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
    ]);
    assert!(
        err.contains("classify run") && err.contains("pretrain"),
        "{err}"
    );
    let err = fails(&[
        "classify",
        "--model",
        base.to_str().unwrap(),
        "--text",
        "hi",
    ]);
    assert!(err.contains("not a classifier"), "{err}");
}

/// The first `n` entries of a JSON array in `assets/data/`, in a temporary file.
fn json_slice(dir: &Path, name: &str, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("assets/data").join(name)).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&all[..n]).unwrap()).unwrap();
    path
}

/// `finetune --task <task>` on the fixture with 40 examples (34 train, batch 4: 8 steps an
/// epoch), plus `extra` flags; returns the `--json` line.
fn task_run(dir: &Path, task: &str, run: &str, extra: &[&str]) -> Value {
    let file = match task {
        "instruct" => "instruction-data.json",
        _ => "instruction-data-with-preference.json",
    };
    let data = format!("data.path={}", json_slice(dir, file, 40).display());
    let out = dir.join(run).display().to_string();
    let fixture = fixture();
    let mut args = vec![
        "finetune",
        "--task",
        task,
        "--model",
        &fixture,
        "--out",
        &out,
        "--json",
        "--set",
        &data,
        "--set",
        "run.batch_size=4",
        "--set",
        "epochs=1",
        "--set",
        "optimizer.lr=1e-3",
        "--set",
        "instruct.max_new_tokens=6",
        "--set",
        "run.log_every=1",
        "--set",
        "run.checkpoint_every=1",
    ];
    args.extend(extra);
    let stdout = ok(&args);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn instruct_trains_writes_scored_test_responses_and_records_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let report = task_run(dir.path(), "instruct", "run", &[]);
    assert_eq!(
        (report["task"].as_str(), report["steps"].as_u64()),
        (Some("instruct"), Some(8))
    );
    for key in ["val_loss", "test_f1", "test_rouge_l"] {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"));
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    let run = dir.path().join("run");
    let lines = std::fs::read_to_string(run.join("test-responses.jsonl")).unwrap();
    let rows: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "a tenth of 40 examples");
    for row in &rows {
        for key in ["instruction", "input", "output", "model_response"] {
            assert!(row[key].is_string(), "{key} in {row}");
        }
    }
    let (_, ckpt) = newest_checkpoint(&run).unwrap();
    let info = ok(&[
        "generate",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "2",
    ]);
    assert!(!info.is_empty());
    let header = std::fs::read(&ckpt).unwrap();
    let header = String::from_utf8_lossy(&header[..header.len().min(4096)]).into_owned();
    assert!(
        header.contains("\"prompt_template\":\"alpaca\""),
        "{header}"
    );
}

#[test]
fn instruct_and_dpo_runs_resume_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for task in ["instruct", "dpo"] {
        let straight = format!("{task}-straight");
        let paused = format!("{task}-paused");
        task_run(dir.path(), task, &straight, &[]);
        task_run(dir.path(), task, &paused, &["--stop-at-step", "3"]);
        let resumed = dir.path().join(&paused).display().to_string();
        ok(&["finetune", "--resume", &resumed]);
        let a = losses(&dir.path().join(&straight));
        assert_eq!(a.len(), 8, "{task}");
        assert_eq!(a, losses(&dir.path().join(&paused)), "{task}");
    }
}

#[test]
fn dpo_starts_at_ln2_and_reports_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let report = task_run(dir.path(), "dpo", "run", &[]);
    let first = losses(&dir.path().join("run"))[0];
    assert_eq!(first.0, 1);
    assert!(
        (first.1 - std::f64::consts::LN_2).abs() < 1e-6,
        "step 1 loss {}",
        first.1
    );
    for key in [
        "val_loss",
        "val_reward_margin",
        "val_reward_accuracy",
        "val_chosen_reward",
    ] {
        assert!(
            report[key].as_f64().is_some_and(f64::is_finite),
            "{key} in {report}"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("run/metrics.svg")).unwrap();
    assert!(
        svg.contains("reward margin") && svg.contains("val_reward_accuracy"),
        "metrics.svg has the DPO panels"
    );
    // Cached reference log-probabilities give the same start, and the same run to rounding.
    task_run(
        dir.path(),
        "dpo",
        "cached",
        &["--set", "dpo.cache_reference=true"],
    );
    let (a, b) = (
        losses(&dir.path().join("run")),
        losses(&dir.path().join("cached")),
    );
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    let report = task_run(
        dir.path(),
        "dpo",
        "sum",
        &["--set", "dpo.logprob=\"sum\"", "--max-steps", "1"],
    );
    assert_eq!(report["steps"], 1);
}

#[test]
fn a_lora_run_saves_adapters_that_export_merged() {
    let dir = tempfile::tempdir().unwrap();
    let report = task_run(
        dir.path(),
        "instruct",
        "lora",
        &["--lora", "4,8", "--max-steps", "3"],
    );
    assert!(
        report["trainable_params"].as_u64().unwrap()
            < report["total_params"].as_u64().unwrap() / 10
    );
    let (_, ckpt) = newest_checkpoint(&dir.path().join("lora")).unwrap();
    let ckpt = ckpt.display().to_string();
    // Only adapters are saved: the checkpoint is far smaller than the 3.4M-parameter base.
    let size = std::fs::metadata(&ckpt).unwrap().len();
    assert!(size < 1_000_000, "{size} bytes");
    let merged = dir.path().join("merged").display().to_string();
    let err = fails(&["export", "--model", &ckpt, "--out", &merged]);
    assert!(err.contains("--merge"), "{err}");
    ok(&["export", "--model", &ckpt, "--out", &merged, "--merge"]);
    let text = repo()
        .join("assets/data/the-verdict.txt")
        .display()
        .to_string();
    let eval = |model: &str| -> f64 {
        let out = ok(&["eval", "--model", model, "--file", &text, "--json"]);
        let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    let (adapted, folded) = (eval(&ckpt), eval(&merged));
    assert!((adapted - folded).abs() < 1e-5, "{adapted} vs {folded}");
}

#[test]
fn bad_instruction_data_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let file = dir.path().join("bad.json");
    let cases = [
        (
            r#"[{"instruction": "a", "output": "b"}, {"instruction": "c"}]"#,
            vec!["bad.json", "missing field `output`", "line"],
        ),
        (
            r#"[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": " "}]"#,
            vec!["bad.json", "entry 1", "`output` is empty"],
        ),
        (
            r#"[{"instruction": "a", "output": "b""#,
            vec!["bad.json", "line 1"],
        ),
    ];
    for (text, wanted) in cases {
        std::fs::write(&file, text).unwrap();
        let data = format!("data.path={}", file.display());
        let err = fails(&[
            "finetune", "--task", "instruct", "--model", &fixture, "--set", &data,
        ]);
        for w in wanted {
            assert!(err.contains(w), "{w:?} in {err}");
        }
    }
    std::fs::write(
        &file,
        r#"[{"instruction": "a", "chosen": "b", "rejected": ""}]"#,
    )
    .unwrap();
    let data = format!("data.path={}", file.display());
    let err = fails(&[
        "finetune", "--task", "dpo", "--model", &fixture, "--set", &data,
    ]);
    assert!(
        err.contains("entry 0") && err.contains("`rejected` is empty"),
        "{err}"
    );
}

#[test]
fn a_base_whose_vocabulary_misses_tokenizer_ids_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    std::fs::create_dir(&tok).unwrap();
    ok(&[
        "train-tokenizer",
        "--input",
        "assets/data/the-verdict.txt",
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    let tokenizer = format!(
        "data.tokenizer={}",
        serde_json::Value::String(tok.display().to_string())
    );
    let recipe = tiny_recipe(dir.path(), 1, serde_json::json!({}));
    let base = dir.path().join("base");
    ok(&[
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--set",
        &tokenizer,
        "--out",
        base.to_str().unwrap(),
    ]);
    let sms = sms_slice(dir.path(), 30, 20).display().to_string();
    let data = format!("data.path={sms}");
    let err = fails(&[
        "finetune",
        "--task",
        "classify",
        "--model",
        base.to_str().unwrap(),
        "--tokenizer",
        "gpt2",
        "--set",
        &data,
    ]);
    assert!(
        err.contains("50257 tokens") && err.contains("only 300"),
        "{err}"
    );
}

#[test]
fn a_lora_run_resumes_bit_exactly_and_chains_into_the_next_stage() {
    let dir = tempfile::tempdir().unwrap();
    let lora = ["--lora", "2,4"];
    task_run(dir.path(), "instruct", "straight", &lora);
    task_run(
        dir.path(),
        "instruct",
        "paused",
        &[&lora[..], &["--stop-at-step", "3"]].concat(),
    );
    let paused = dir.path().join("paused").display().to_string();
    // Other LoRA settings cannot continue the run.
    let err = fails(&["finetune", "--resume", &paused, "--lora", "4"]);
    assert!(err.contains("rank 2") && err.contains("rank 4"), "{err}");
    ok(&["finetune", "--resume", &paused]);
    let straight = losses(&dir.path().join("straight"));
    assert_eq!(straight.len(), 8);
    assert_eq!(straight, losses(&dir.path().join("paused")));
    // The LoRA run is the next stage's base: its adapters are merged into it.
    let data = format!(
        "data.path={}",
        json_slice(dir.path(), "instruction-data-with-preference.json", 40).display()
    );
    let out = dir.path().join("dpo").display().to_string();
    let stdout = ok(&[
        "finetune",
        "--task",
        "dpo",
        "--model",
        &paused,
        "--out",
        &out,
        "--json",
        "--set",
        &data,
        "--set",
        "run.batch_size=4",
        "--max-steps",
        "1",
    ]);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["steps"], 1);
    let err = fails(&[
        "finetune",
        "--task",
        "instruct",
        "--model",
        &fixture(),
        "--set",
        "trainable=lora",
    ]);
    assert!(err.contains("trainable") && err.contains("lora"), "{err}");
}
