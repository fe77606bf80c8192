//! The fault suite: bad input and faults against the real binary, as a user meets them.
//!
//! - [`CASES`]: one row per fault: the command, what is wrong, the exit code (1 for an
//!   error of ours, 2 for a flag that clap refuses) and the words the output must and must
//!   not hold. Every row is also checked for a panic and for a cause printed twice.
//! - Kills: a training run is stopped with `kill -9` at exact moments (failpoints, see
//!   `llm_common::failpoint`): before its first checkpoint, while writing one, after the
//!   rename. Resuming then gives losses identical to an uninterrupted run.
//! - Damaged checkpoints: a truncated newest checkpoint is set aside and the run goes on
//!   from the one before; a flipped byte is caught by the checksum.
//!
//! `docs/faults.md` lists every case; a test checks that it does. New commands (`finetune`,
//! `serve`, `viz`) add their rows here.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use llm_model::backend::DefaultBackend;
use serde_json::json;

/// One fault: run `args` (placeholders `{name}` are filled from the fixtures), expect
/// `code`, find every one of `words` and none of `absent` in stdout + stderr, and, if
/// `leaves_no` is set, check that this path was not created.
struct Case {
    name: &'static str,
    fault: &'static str,
    args: &'static [&'static str],
    code: i32,
    words: &'static [&'static str],
    absent: &'static [&'static str],
    leaves_no: Option<&'static str>,
}

const fn case(
    name: &'static str,
    fault: &'static str,
    args: &'static [&'static str],
    code: i32,
    words: &'static [&'static str],
) -> Case {
    Case {
        name,
        fault,
        args,
        code,
        words,
        absent: &[],
        leaves_no: None,
    }
}

const VERDICT: &str = "assets/data/the-verdict.txt";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // generate
    case("generate-negative-temperature", "a negative temperature",
        &["generate", "--model", "{fixture}", "--prompt", "x", "--temperature", "-1"],
        2, &["--temperature", "finite number ≥ 0"]),
    case("generate-nan-temperature", "a NaN temperature",
        &["generate", "--model", "{fixture}", "--prompt", "x", "--temperature", "NaN"],
        2, &["--temperature", "finite number ≥ 0"]),
    case("generate-infinite-temperature", "an infinite temperature",
        &["generate", "--model", "{fixture}", "--prompt", "x", "--temperature", "inf"],
        2, &["--temperature", "finite number ≥ 0"]),
    case("generate-top-k-zero", "top-k of 0",
        &["generate", "--model", "{fixture}", "--prompt", "x", "--top-k", "0"],
        2, &["--top-k", "at least 1"]),
    Case { absent: &["Allowed::"], ..case("generate-special-token-text", "<|endoftext|> in the prompt without --special",
        &["generate", "--model", "{fixture}", "--prompt", "a<|endoftext|>b"],
        1, &["<|endoftext|>", "--special allow", "--special text"]) },
    case("generate-special-allowed", "<|endoftext|> in the prompt with --special allow",
        &["generate", "--model", "{fixture}", "--prompt", "a<|endoftext|>b", "--special", "allow", "--max-new-tokens", "1"],
        0, &[]),
    case("generate-prompt-ids-empty-entry", "an empty entry in --prompt-ids",
        &["generate", "--model", "{fixture}", "--prompt-ids", "1,,2"],
        1, &["--prompt-ids", "entry 2", "empty"]),
    case("generate-long-prompt", "a prompt longer than the context (129 > 128 tokens)",
        &["generate", "--model", "{fixture}", "--prompt-ids", "{ids129}", "--max-new-tokens", "2"],
        0, &["note", "129 tokens", "the last 128"]),
    case("generate-non-finite-weights", "a model whose weights hold NaN",
        &["generate", "--model", "{nan_model}", "--prompt", "x"],
        1, &["not finite", "transformer.ln_f.weight", "model.safetensors"]),
    case("generate-corrupt-checkpoint", "one byte flipped a quarter into the weights",
        &["generate", "--model", "{flipped}", "--prompt", "x"],
        1, &["flipped.ckpt", "corrupt checkpoint", "section \"model\"", "SHA-256"]),
    case("generate-truncated-checkpoint", "a checkpoint cut in half",
        &["generate", "--model", "{truncated}", "--prompt", "x"],
        1, &["truncated.ckpt", "corrupt checkpoint", "truncated"]),
    case("generate-run-directory", "a run directory as --model",
        &["generate", "--model", "{run}", "--prompt", "I had", "--max-new-tokens", "2"],
        0, &["using", "best.ckpt", "step 2", "best validation loss"]),
    case("generate-run-without-checkpoint", "a run directory with no complete checkpoint",
        &["generate", "--model", "{empty_run}", "--prompt", "x"],
        1, &["without a complete checkpoint"]),
    case("generate-not-a-model", "a directory that is neither a model nor a run",
        &["generate", "--model", "assets", "--prompt", "x"],
        1, &["config.json", "checkpoints/"]),
    // eval
    case("eval-non-finite-weights", "a model whose weights hold NaN",
        &["eval", "--model", "{nan_model}", "--file", VERDICT],
        1, &["not finite", "transformer.ln_f.weight"]),
    case("eval-batch-size-zero", "--batch-size 0",
        &["eval", "--model", "{fixture}", "--file", VERDICT, "--batch-size", "0"],
        2, &["--batch-size", "at least 1"]),
    case("eval-context-too-long", "a window longer than the model's context",
        &["eval", "--model", "{fixture}", "--file", VERDICT, "--context", "500"],
        1, &["--context", "n_positions (128)"]),
    // tokenizer commands
    case("detokenize-no-ids", "--ids \"\"",
        &["detokenize", "--ids", ""],
        1, &["--ids", "no token ids"]),
    case("detokenize-empty-entry", "--ids \"1,,2\"",
        &["detokenize", "--ids", "1,,2"],
        1, &["--ids", "entry 2", "empty"]),
    case("tokenize-no-input", "neither --text nor --file",
        &["tokenize"],
        2, &["--text", "--file"]),
    case("tokenize-missing-file", "a file that does not exist",
        &["tokenize", "--file", "/no/such/file.txt"],
        1, &["/no/such/file.txt", "No such file or directory"]),
    // prepare
    Case { absent: &["File exists (os error 17): File exists"], ..case("prepare-output-is-a-file", "--out names a regular file",
        &["prepare", "--input", VERDICT, "--out", "{a_file}"],
        1, &["a-file", "is a file"]) },
    case("prepare-empty-input-directory", "an input directory with no corpus files",
        &["prepare", "--input", "{empty_dir}", "--out", "{tmp}/prepared"],
        1, &["empty-dir", "no .txt or .jsonl"]),
    case("prepare-parquet-without-the-text-column", "a Parquet file whose text is in another column",
        &["prepare", "--input", "crates/data/tests/fixtures/parquet/bad-no-text.parquet", "--out", "{tmp}/prepared"],
        1, &["bad-no-text.parquet", "no column \"text\"", "content, id, dump", "--text-field"]),
    case("prepare-hf-dataset-not-cached", "hf://datasets/… that is not in the hub cache",
        &["prepare", "--input", "hf://datasets/no-org/no-dataset/sample", "--out", "{tmp}/prepared"],
        1, &["hf://datasets/no-org/no-dataset/sample", "cargo xtask download --dataset no-org/no-dataset --name sample"]),
    // pretrain: the config is checked whole, before anything is written
    Case { absent: &["shakespeare-small.json"], leaves_no: Some("{tmp}/never-1"),
        ..case("pretrain-bad-set-value", "--set optimizer.lr=-1",
        &["pretrain", "--set", "optimizer.lr=-1", "--out", "{tmp}/never-1"],
        1, &["--set optimizer.lr=-1", "optimizer.lr", "positive"]) },
    Case { leaves_no: Some("{tmp}/never-2"), ..case("pretrain-bad-shape", "n_head 3 with n_embd 128",
        &["pretrain", "--set", "model.n_head=3", "--out", "{tmp}/never-2"],
        1, &["--set model.n_head=3", "n_embd (128)", "n_head (3)"]) },
    Case { leaves_no: Some("{tmp}/never-3"), ..case("pretrain-sequence-too-long", "data.seq_len longer than the context",
        &["pretrain", "--set", "data.seq_len=1000", "--out", "{tmp}/never-3"],
        1, &["data.seq_len", "n_positions 128"]) },
    Case { leaves_no: Some("{tmp}/never-4"), ..case("pretrain-dropout-out-of-range", "dropout 1.5",
        &["pretrain", "--set", "model.dropout=1.5", "--out", "{tmp}/never-4"],
        1, &["--set model.dropout=1.5", "[0, 1)"]) },
    Case { leaves_no: Some("{tmp}/never-5"), ..case("pretrain-missing-input", "a corpus file that does not exist",
        &["pretrain", "--set", "data.inputs=[\"no/such.txt\"]", "--out", "{tmp}/never-5"],
        1, &["no/such.txt"]) },
    case("pretrain-unknown-key", "a key that does not exist",
        &["pretrain", "--set", "optimizer.learning_rate=1"],
        1, &["optimizer.learning_rate", "unknown key"]),
    case("pretrain-missing-config", "a recipe file that does not exist",
        &["pretrain", "--config", "configs/no-such.json"],
        1, &["configs/no-such.json"]),
    case("pretrain-resume-not-a-run", "--resume on a directory that is not a run",
        &["pretrain", "--resume", "assets"],
        1, &["not a run directory"]),
    case("pretrain-run-exists", "a fresh start where a run with a checkpoint is",
        &["pretrain", "--config", "{recipe}", "--out", "{run}"],
        1, &["already holds a run", "--resume"]),
    case("pretrain-resume-past-max-steps", "--resume --max-steps 1 on a run at step 2",
        &["pretrain", "--resume", "{run_copy}", "--max-steps", "1"],
        0, &["already at step 2", "nothing to train", "finished after 2 steps"]),
    // finetune and classify: the recipe is checked whole, before anything is written
    case("finetune-no-task", "neither --task nor --config",
        &["finetune", "--model", "{fixture}"],
        1, &["--task", "classify|instruct|dpo"]),
    case("finetune-unknown-task", "--task translate",
        &["finetune", "--task", "translate", "--model", "{fixture}"],
        2, &["--task", "classify", "instruct", "dpo"]),
    Case { leaves_no: Some("{tmp}/never-6"), ..case("finetune-lora-rank-zero", "--lora 0",
        &["finetune", "--task", "classify", "--model", "{fixture}", "--lora", "0", "--out", "{tmp}/never-6"],
        1, &["--lora", "rank", "≥ 1"]) },
    Case { leaves_no: Some("{tmp}/never-7"), ..case("finetune-unknown-lora-target", "a LoRA target that is not a projection",
        &["finetune", "--task", "instruct", "--model", "{fixture}", "--set", "lora.rank=2", "--set", "lora.targets=[\"q_proj\"]", "--out", "{tmp}/never-7"],
        1, &["lora", "\"q_proj\"", "c_attn, c_proj, c_fc"]) },
    case("finetune-unknown-key", "a key that does not exist",
        &["finetune", "--task", "dpo", "--model", "{fixture}", "--set", "dpo.betta=0.2"],
        1, &["dpo.betta", "unknown key", "--set dpo.betta=0.2"]),
    Case { leaves_no: Some("{tmp}/never-8"), ..case("finetune-missing-data", "a dataset file that does not exist",
        &["finetune", "--task", "classify", "--model", "{fixture}", "--set", "data.path=no/such.tsv", "--out", "{tmp}/never-8"],
        1, &["no/such.tsv", "No such file"]) },
    case("finetune-missing-model", "a --model that does not exist",
        &["finetune", "--task", "classify", "--model", "no/such/model"],
        1, &["no/such/model"]),
    case("finetune-resume-not-a-run", "--resume on a directory that is not a run",
        &["finetune", "--resume", "assets"],
        1, &["not a run directory"]),
    case("finetune-resume-a-pretraining-run", "--resume a pre-training run as classify",
        &["finetune", "--resume", "{run_copy}", "--config", "configs/finetune-classify.json", "--model", "{fixture}"],
        1, &["pretrain run", "cannot resume as classify"]),
    case("classify-not-a-classifier", "a language model's checkpoint given to classify",
        &["classify", "--model", "{run}", "--text", "x"],
        1, &["not a classifier checkpoint"]),
];

/// The files the rows refer to, made once.
struct Fixtures {
    tmp: tempfile::TempDir,
    values: Vec<(&'static str, String)>,
}

impl Fixtures {
    fn fill(&self, arg: &str) -> String {
        let mut s = arg.to_string();
        for (k, v) in &self.values {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn pretrain(recipe: &Path, out: &Path) {
    ok(&[
        "pretrain",
        "--config",
        &path_str(recipe),
        "--out",
        &path_str(out),
    ]);
}

fn fixtures() -> Fixtures {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A trained run (2 steps, evaluated every step, so it has a best.ckpt) and a copy.
    let recipe = tiny_recipe(t, 2, json!({"run": {"eval_every": 1}}));
    let run = t.join("run");
    pretrain(&recipe, &run);
    copy_dir(&run, &t.join("run-copy"));
    // A checkpoint with one byte flipped a quarter of the way in, one cut in half.
    let ckpt = std::fs::read(run.join("checkpoints/step_00000002.ckpt")).unwrap();
    let mut flipped = ckpt.clone();
    flipped[ckpt.len() / 4] ^= 0x20;
    std::fs::write(t.join("flipped.ckpt"), flipped).unwrap();
    std::fs::write(t.join("truncated.ckpt"), &ckpt[..ckpt.len() / 2]).unwrap();
    // A Hugging Face model whose final LayerNorm holds NaN.
    let device = Default::default();
    let (mut model, config) =
        llm_model::pretrained::load_hf_dir::<DefaultBackend>(Path::new(&fixture()), &device)
            .unwrap();
    model.ln_f.gamma = model.ln_f.gamma.map(|g| g.mul_scalar(f32::NAN));
    llm_model::weights::save_hf_dir(&model, &config, &t.join("nan-model")).unwrap();
    // Odds and ends.
    std::fs::create_dir_all(t.join("empty-run/checkpoints")).unwrap();
    std::fs::create_dir_all(t.join("empty-dir")).unwrap();
    std::fs::write(t.join("a-file"), "not a directory").unwrap();
    let ids129: Vec<String> = (0..129).map(|i| ((i * 7919) % 50257).to_string()).collect();
    let values = vec![
        ("fixture", fixture()),
        ("tmp", path_str(t)),
        ("recipe", path_str(&recipe)),
        ("run", path_str(&run)),
        ("run_copy", path_str(&t.join("run-copy"))),
        ("flipped", path_str(&t.join("flipped.ckpt"))),
        ("truncated", path_str(&t.join("truncated.ckpt"))),
        ("nan_model", path_str(&t.join("nan-model"))),
        ("empty_run", path_str(&t.join("empty-run"))),
        ("empty_dir", path_str(&t.join("empty-dir"))),
        ("a_file", path_str(&t.join("a-file"))),
        ("ids129", ids129.join(",")),
    ];
    Fixtures { tmp, values }
}

#[test]
fn every_fault_gets_a_clear_message_and_exit_code() {
    let fx = fixtures();
    let mut failures = Vec::new();
    for case in CASES {
        let args: Vec<String> = case.args.iter().map(|a| fx.fill(a)).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&refs);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        let mut wrong = Vec::new();
        if out.status.code() != Some(case.code) {
            wrong.push(format!(
                "exit code {:?}, expected {}",
                out.status.code(),
                case.code
            ));
        }
        for w in case.words {
            if !text.contains(&fx.fill(w)) {
                wrong.push(format!("no {w:?}"));
            }
        }
        for w in case.absent {
            if text.contains(w) {
                wrong.push(format!("says {w:?}"));
            }
        }
        if text.contains("panicked") {
            wrong.push("panicked".into());
        }
        if text.matches("(os error").count() > 1 {
            wrong.push("a cause printed twice".into());
        }
        if let Some(p) = case.leaves_no {
            if Path::new(&fx.fill(p)).exists() {
                wrong.push(format!("left {p} behind"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n  $ xtask {}\n{}",
                case.name,
                case.fault,
                wrong.join("; "),
                refs.join(" "),
                text.trim_end()
            ));
        }
    }
    drop(fx.tmp);
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// `docs/faults.md` lists every case of this file by name.
#[test]
fn the_docs_list_every_case() {
    let doc = std::fs::read_to_string(repo().join("docs/faults.md")).unwrap();
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.extend(KILL_CASES.iter().map(|k| k.name));
    names.extend([
        "truncated-newest-checkpoint",
        "flipped-byte-in-a-checkpoint",
        "prepare-rerun-removes-stale-shards",
    ]);
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/faults.md does not list {missing:?}"
    );
}

/// A kill: where the run is paused (a failpoint), and what must be on disk after it.
struct Kill {
    name: &'static str,
    failpoint: &'static str,
    /// The checkpoint files left (temporary files included).
    left: &'static [&'static str],
    /// `--resume` rather than starting again with the same command.
    resume: bool,
    /// Words the restart must print.
    says: &'static [&'static str],
}

/// The kill recipe: 6 steps with dropout, evaluated every 2 (best.ckpt), a step
/// checkpoint every 3.
fn kill_recipe(dir: &Path) -> PathBuf {
    tiny_recipe(
        dir,
        6,
        json!({"model": {"dropout": 0.1},
               "run": {"eval_every": 2, "checkpoint_every": 3, "keep_last": 2}}),
    )
}

#[rustfmt::skip]
const KILL_CASES: &[Kill] = &[
    Kill { name: "kill-before-first-checkpoint", failpoint: "after-step:1", left: &[],
        resume: false, says: &[] },
    Kill { name: "kill-before-first-checkpoint-resume", failpoint: "after-step:1", left: &[],
        resume: true, says: &["no usable checkpoint", "starting from step 0"] },
    Kill { name: "kill-during-first-best-write", failpoint: "mid-write:best.ckpt", left: &[".best.ckpt.tmp-"],
        resume: true, says: &["removed", ".best.ckpt.tmp-", "interrupted write", "starting from step 0"] },
    Kill { name: "kill-after-best-rename", failpoint: "after-rename:best.ckpt", left: &["best.ckpt"],
        resume: true, says: &["resuming at step 2", "best.ckpt"] },
    Kill { name: "kill-with-only-best", failpoint: "after-step:2", left: &["best.ckpt"],
        resume: true, says: &["resuming at step 2", "best.ckpt"] },
    Kill { name: "kill-during-step-write", failpoint: "mid-write:step_00000003.ckpt",
        left: &[".step_00000003.ckpt.tmp-", "best.ckpt"],
        resume: true, says: &["removed", "resuming at step 2", "best.ckpt"] },
    Kill { name: "kill-after-rename", failpoint: "after-rename:step_00000003.ckpt",
        left: &["best.ckpt", "step_00000003.ckpt"],
        resume: true, says: &["resuming at step 3", "step_00000003.ckpt"] },
];

/// Starts `pretrain` paused at `failpoint`; returns once it is paused there.
fn start_paused(recipe: &Path, out: &Path, failpoint: &str) -> Child {
    let mut child = xtask()
        .args([
            "pretrain",
            "--config",
            &path_str(recipe),
            "--out",
            &path_str(out),
        ])
        .env(llm_common::failpoint::ENV, failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains("failpoint") && line.contains("paused") => return child,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("the run never reached {failpoint}: {e}");
            }
        }
    }
}

#[test]
fn kill_9_at_any_moment_then_restart_gives_identical_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = kill_recipe(tmp.path());
    let reference = tmp.path().join("reference");
    pretrain(&recipe, &reference);
    let want = losses(&reference);
    assert_eq!(want.len(), 6);
    let mut failures = Vec::new();
    for kill in KILL_CASES {
        let out = tmp.path().join(kill.name);
        let mut child = start_paused(&recipe, &out, kill.failpoint);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let left = file_names(&out.join("checkpoints"));
        let left_ok = left.len() == kill.left.len()
            && kill
                .left
                .iter()
                .all(|want| left.iter().any(|f| f.starts_with(want)));
        let args = match kill.resume {
            true => vec!["pretrain".to_string(), "--resume".into(), path_str(&out)],
            false => vec![
                "pretrain".to_string(),
                "--config".into(),
                path_str(&recipe),
                "--out".into(),
                path_str(&out),
            ],
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let restart = run_env(&refs, &[("RUST_LOG", "info")]);
        let text = format!("{}{}", stdout(&restart), stderr(&restart));
        let mut wrong = Vec::new();
        if !left_ok {
            wrong.push(format!("left {left:?}, expected {:?}", kill.left));
        }
        if !restart.status.success() {
            wrong.push("the restart failed".into());
        }
        for w in kill.says {
            if !text.contains(w) {
                wrong.push(format!("no {w:?}"));
            }
        }
        if losses(&out) != want {
            wrong.push(format!("losses {:?}, expected {want:?}", losses(&out)));
        }
        let temps: Vec<String> = file_names(&out.join("checkpoints"))
            .into_iter()
            .filter(|f| f.contains(".tmp-"))
            .collect();
        if !temps.is_empty() {
            wrong.push(format!("temporary files left: {temps:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                kill.name,
                wrong.join("; "),
                text.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A 2-step run keeping 3 checkpoints, the newest truncated. `--resume` warns, naming the
/// file and the fault, moves it aside (never deletes it), and continues from step 1 with
/// the losses of an uninterrupted run.
#[test]
fn truncated_newest_checkpoint_falls_back_to_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 3, json!({"run": {"keep_last": 3}}));
    let reference = tmp.path().join("reference");
    pretrain(&recipe, &reference);
    let out = tmp.path().join("run");
    ok(&[
        "pretrain",
        "--config",
        &path_str(&recipe),
        "--out",
        &path_str(&out),
        "--max-steps",
        "2",
    ]);
    // The last step is always evaluated, so best.ckpt is a valid step-2 checkpoint too:
    // remove it, so that the fall-back has to reach the older step checkpoint.
    std::fs::remove_file(out.join("checkpoints/best.ckpt")).unwrap();
    let newest = out.join("checkpoints/step_00000002.ckpt");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();
    let resumed = run_env(
        &["pretrain", "--resume", &path_str(&out), "--max-steps", "3"],
        &[("RUST_LOG", "info")],
    );
    let err = stderr(&resumed);
    assert!(resumed.status.success(), "{err}");
    for w in [
        "step_00000002.ckpt",
        "truncated",
        "step_00000002.ckpt.corrupt",
        "falling back",
        "resuming at step 1",
    ] {
        assert!(err.contains(w), "no {w:?} in:\n{err}");
    }
    assert!(out.join("checkpoints/step_00000002.ckpt.corrupt").is_file());
    assert_eq!(losses(&out), losses(&reference));
}

/// A flipped byte in the newest checkpoint: the checksum catches it, naming the section,
/// and `--resume` falls back in the same way.
#[test]
fn flipped_byte_is_caught_by_the_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 2, json!({"run": {"keep_last": 3}}));
    let out = tmp.path().join("run");
    pretrain(&recipe, &out);
    std::fs::remove_file(out.join("checkpoints/best.ckpt")).unwrap();
    let newest = out.join("checkpoints/step_00000002.ckpt");
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 4;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();
    let err = fails(&["generate", "--model", &path_str(&newest), "--prompt", "x"]);
    assert!(
        err.contains("section \"model\"") && err.contains("SHA-256"),
        "{err}"
    );
    let resumed = run_env(
        &["pretrain", "--resume", &path_str(&out), "--max-steps", "3"],
        &[("RUST_LOG", "info")],
    );
    let err = stderr(&resumed);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains("does not match its SHA-256") && err.contains("resuming at step 1"),
        "{err}"
    );
}

/// Preparing again into the same directory removes the shards the new manifest does not
/// list.
#[test]
fn prepare_rerun_removes_stale_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let out = path_str(&tmp.path().join("data"));
    ok(&[
        "prepare",
        "--input",
        VERDICT,
        "--out",
        &out,
        "--shard-tokens",
        "1000",
    ]);
    let many = file_names(Path::new(&out))
        .iter()
        .filter(|f| f.ends_with(".bin"))
        .count();
    assert!(many > 2, "{many} shards");
    let text = ok(&["prepare", "--input", VERDICT, "--out", &out]);
    assert!(text.contains("removed"), "{text}");
    let bins: Vec<String> = file_names(Path::new(&out))
        .into_iter()
        .filter(|f| f.ends_with(".bin"))
        .collect();
    assert_eq!(bins, ["train_000000.bin", "val_000000.bin"]);
}
