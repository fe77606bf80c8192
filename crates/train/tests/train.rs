//! The training loop end to end on tiny configs: the optimizer against the fixture's AdamW
//! step, exact resume, and every fault the loop must survive with a clear message.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use llm_model::{cross_entropy, pretrained, Checkpoint, Gpt, KernelBackend};
use llm_train::{
    train, GptOptimizer, OptimizerConfig, Outcome, TrainConfig, TrainError, TrainOptions,
};
use serde_json::{json, Value};

type B = Autodiff<Flex>;

/// Training tests run one at a time: the CPU backend's RNG (model init, dropout) is
/// process-wide, so two runs in parallel threads would draw from each other's stream.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_dir() -> PathBuf {
    repo().join("crates/model/tests/fixtures/tiny-gpt2")
}

fn reference() -> Value {
    let file = std::fs::File::open(fixture_dir().join("reference.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}

fn loss_on<Bk: KernelBackend>(
    model: &Gpt<Bk>,
    batch: &[Vec<u32>],
    device: &Bk::Device,
) -> Tensor<Bk, 1> {
    let t = batch[0].len() - 1;
    let flat = |off: usize| -> Vec<i64> {
        batch
            .iter()
            .flat_map(|s| s[off..off + t].iter().map(|&x| x as i64))
            .collect()
    };
    let inputs =
        Tensor::<Bk, 2, Int>::from_data(TensorData::new(flat(0), [batch.len(), t]), device);
    let targets =
        Tensor::<Bk, 2, Int>::from_data(TensorData::new(flat(1), [batch.len(), t]), device);
    cross_entropy(model.forward(inputs), targets)
}

/// The training crate's optimizer, configured as the fixture was made (torch AdamW, lr 1e-3,
/// betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on every parameter, no clipping), must
/// reproduce transformers' loss after one step and its gradient norm (1e-4 relative).
#[test]
fn optimizer_matches_the_fixture_adamw_step() {
    let _serial = serial();
    let device = Default::default();
    let (model, _) = pretrained::load_hf_dir::<B>(&fixture_dir(), &device).unwrap();
    let r = &reference()["train_step"];
    let batch: Vec<Vec<u32>> = r["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let loss = loss_on(&model, &batch, &device);
    let before: f64 = loss.clone().into_scalar().elem();
    assert!(rel_err(before, r["loss_before"].as_f64().unwrap()) < 1e-5);
    let grads = GradientsParams::from_grads(loss.backward(), &model);

    let config = OptimizerConfig {
        lr: 1e-3,
        weight_decay: 0.1,
        decay_all: true,
        grad_clip: 0.0,
        ..Default::default()
    };
    let mut optim = GptOptimizer::<B>::new(&config);
    let (model, norm) = optim.step(1e-3, model, grads);
    let e_norm = rel_err(norm, r["global_grad_l2_norm"].as_f64().unwrap());
    let after: f64 = loss_on(&model.valid(), &batch, &device)
        .into_scalar()
        .elem();
    let e_loss = rel_err(after, r["loss_after"].as_f64().unwrap());
    eprintln!(
        "GptOptimizer vs torch AdamW: loss_after rel {e_loss:.2e}, grad norm rel {e_norm:.2e}"
    );
    assert!(
        e_norm < 1e-4,
        "gradient norm {norm}: relative error {e_norm:e}"
    );
    assert!(
        e_loss < 1e-4,
        "loss after the step {after}: relative error {e_loss:e}"
    );
}

/// The fused update is Burn's `AdamW` bit for bit: Flex's one-pass kernel and the generic
/// default (NdArray), with and without weight decay, over several steps and sizes that
/// leave remainders (lanes) and span several parallel chunks.
#[test]
fn fused_adamw_is_burns_adamw_bit_for_bit() {
    fn check<Bk: KernelBackend>(name: &str) {
        use burn::optim::{AdamWConfig, SimpleOptimizer};
        use burn::tensor::Distribution;
        let device = Default::default();
        for (shape, weight_decay) in [([37, 53], 0.1), ([1, 70_001], 0.0)] {
            let (b1, b2, eps) = (0.9, 0.95, 1e-8);
            let burn = AdamWConfig::new()
                .with_beta_1(b1)
                .with_beta_2(b2)
                .with_epsilon(eps)
                .with_weight_decay(weight_decay)
                .build();
            let fused = llm_train::FusedAdamW {
                beta_1: b1,
                beta_2: b2,
                epsilon: eps,
                weight_decay,
            };
            let p0 = Tensor::<Bk, 2>::random(shape, Distribution::Normal(0.0, 0.5), &device);
            let (mut a, mut b) = (p0.clone(), p0);
            let (mut sa, mut sb) = (None, None);
            for step in 1..=3 {
                let g = Tensor::<Bk, 2>::random(shape, Distribution::Normal(0.0, 1e-2), &device);
                let lr = 6e-4 * step as f64;
                (a, sa) = SimpleOptimizer::<Bk>::step(&burn, lr, a, g.clone(), sa);
                (b, sb) = SimpleOptimizer::<Bk>::step(&fused, lr, b, g, sb);
                let bits = |t: &Tensor<Bk, 2>| -> Vec<u32> {
                    t.to_data().iter::<f32>().map(f32::to_bits).collect()
                };
                let (ma, mb) = (
                    &sa.as_ref().unwrap().momentum,
                    &sb.as_ref().unwrap().momentum,
                );
                assert_eq!(ma.time, mb.time, "{name}: step count");
                assert!(
                    bits(&a) == bits(&b),
                    "{name} {shape:?} step {step}: parameters"
                );
                assert!(
                    bits(&ma.moment_1) == bits(&mb.moment_1),
                    "{name}: first moment"
                );
                assert!(
                    bits(&ma.moment_2) == bits(&mb.moment_2),
                    "{name}: second moment"
                );
            }
        }
    }
    check::<Flex>("Flex");
    check::<burn::backend::NdArray>("NdArray");
}

/// Collects every float parameter's values, with its rank.
struct Values(Vec<(usize, Vec<f32>)>);

impl<Bk: Backend> ModuleVisitor<Bk> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        self.0
            .push((D, param.val().into_data().iter::<f32>().collect()));
    }
}

fn params<Bk: Backend>(model: &Gpt<Bk>) -> Vec<(usize, Vec<f32>)> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

/// With all-zero gradients Adam's update is zero, so what moves is weight decay alone: the
/// 2-D weights and embeddings shrink by (1 − lr·wd), biases and LayerNorms stay put.
#[test]
fn weight_decay_skips_biases_and_layernorms() {
    let _serial = serial();
    let device = Default::default();
    B::seed(&device, 7);
    let model: Gpt<B> = llm_model::Gpt2Config::tiny()
        .with_vocab_size(97)
        .init(&device)
        .unwrap();
    let before = params(&model);
    let batch = vec![(0..9).collect::<Vec<u32>>()];
    let zero = loss_on(&model, &batch, &device).mul_scalar(0.0);
    let grads = GradientsParams::from_grads(zero.backward(), &model);
    let mut optim = GptOptimizer::<B>::new(&OptimizerConfig::default());
    let (lr, wd) = (0.5, 0.1);
    let (model, norm) = optim.step(lr, model, grads);
    assert_eq!(norm, 0.0);
    let after = params(&model);
    let (mut decayed, mut kept) = (0, 0);
    for ((rank, b), (_, a)) in before.iter().zip(&after) {
        let factor = if *rank >= 2 { 1.0 - lr * wd } else { 1.0 };
        for (x, y) in b.iter().zip(a) {
            assert!(
                (x * factor as f32 - y).abs() <= 1e-6 * x.abs().max(1.0),
                "rank {rank}: {x} -> {y}"
            );
        }
        if *rank >= 2 {
            decayed += 1
        } else {
            kept += 1
        }
    }
    assert!(decayed >= 6 && kept >= 10, "{decayed} decayed, {kept} kept");
}

/// A tiny run recipe on the-verdict (5,145 tokens), with dropout on so that resuming must
/// restore the RNG as well as the data position.
fn tiny_config(name: &str, max_steps: usize) -> TrainConfig {
    TrainConfig::from_value(json!({
        "model": {"preset": "tiny", "n_positions": 32, "dropout": 0.1},
        "data": {"inputs": [repo().join("assets/data/the-verdict.txt")], "batch_order": "random"},
        "optimizer": {"lr": 3e-3},
        "schedule": {"max_steps": max_steps, "warmup_steps": 2, "min_lr": 3e-4},
        "run": {
            "name": name, "batch_size": 2, "tokens_per_step": 128, "seed": 42,
            "eval_every": 3, "eval_batches": 2, "sample_every": 0, "sample_tokens": 4,
            "checkpoint_every": 2, "keep_last": 2, "log_every": 1
        }
    }))
    .unwrap()
}

fn run(
    config: TrainConfig,
    dir: &Path,
    resume: bool,
    stop_at: Option<usize>,
) -> llm_train::Result<llm_train::Summary> {
    let mut options = TrainOptions::new(dir);
    options.resume = resume;
    options.stop_at_step = stop_at;
    train::<B>(config, options, Default::default())
}

#[test]
fn resume_reproduces_the_uninterrupted_run_exactly() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let n = 3;
    let straight = run(tiny_config("a", 2 * n), &tmp.path().join("a"), false, None).unwrap();
    assert_eq!(straight.outcome, Outcome::Finished);
    assert_eq!(straight.losses.len(), 2 * n);

    let dir = tmp.path().join("b");
    let first = run(tiny_config("b", 2 * n), &dir, false, Some(n)).unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    assert_eq!(first.steps, n);
    let second = run(tiny_config("b", 2 * n), &dir, true, None).unwrap();
    assert_eq!(second.outcome, Outcome::Finished);
    let resumed: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(
        resumed, straight.losses,
        "per-step losses must be identical"
    );
    assert_eq!(second.val_loss, straight.val_loss);

    // The run directory holds what it promises.
    for f in [
        "config.json",
        "metrics.jsonl",
        "samples.txt",
        "checkpoints/best.ckpt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let events = std::fs::read_dir(&dir).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
    });
    assert!(events.count() >= 1, "no TensorBoard event file");
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (1..=2 * n as u64).collect::<Vec<_>>(),
        "one metrics line per step, no repeats"
    );
    let line: Value = serde_json::from_str(metrics.lines().nth(2).unwrap()).unwrap();
    for key in [
        "loss",
        "val_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed",
    ] {
        assert!(line[key].is_number(), "metrics line lacks {key}: {line}");
    }
    // keep_last 2: the newest two step checkpoints survive.
    let mut ckpts: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ckpts.sort();
    assert_eq!(
        ckpts,
        ["best.ckpt", "step_00000004.ckpt", "step_00000006.ckpt"]
    );
    // A checkpoint records the run: step, tokenizer, data position, config.
    let ckpt = Checkpoint::load(&dir.join("checkpoints/step_00000006.ckpt")).unwrap();
    assert_eq!(ckpt.metadata["step"], 6);
    assert_eq!(ckpt.metadata["tokenizer"], "gpt2");
    assert!(ckpt.metadata["data_position"].is_object());
    assert_eq!(ckpt.metadata["train_config"]["run"]["name"], "b");
    assert!(ckpt.section("optim.decay").is_some() && ckpt.section("optim.no_decay").is_some());
}

fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The issue's reproduction: lr 1e30 with everything every step. The validation loss is
/// NaN after step 1, so the run stops before any checkpoint is written.
#[test]
fn a_diverging_run_saves_nothing_from_the_diverged_model() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config("nan", 3);
    config.optimizer.lr = 1e30;
    config.schedule.warmup_steps = 0;
    config.run.eval_every = 1;
    config.run.sample_every = 1;
    config.run.checkpoint_every = 1;
    let dir = tmp.path().join("nan");
    let err = run(config, &dir, false, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            TrainError::Diverged {
                step: 1,
                checkpoint: None,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("validation loss") && msg.contains("No checkpoint was saved"),
        "{msg}"
    );
    assert_eq!(checkpoint_files(&dir), Vec::<String>::new());
    // Without evaluation the checkpoint's own check catches it: finite weights that give a
    // non-finite loss are not saved either.
    let mut config = tiny_config("nan2", 3);
    config.optimizer.lr = 1e30;
    config.schedule.warmup_steps = 0;
    config.run.eval_every = 0;
    config.run.checkpoint_every = 1;
    let dir = tmp.path().join("nan2");
    let msg = run(config, &dir, false, None).unwrap_err().to_string();
    assert!(
        msg.contains("at step 1") && msg.contains("on a validation batch"),
        "{msg}"
    );
    assert_eq!(checkpoint_files(&dir), Vec::<String>::new());
}

/// A run that diverges later names its last checkpoint, and that checkpoint is good:
/// finite weights that score a finite loss.
#[test]
fn the_last_good_checkpoint_named_after_divergence_is_good() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("late");
    let mut config = tiny_config("late", 3);
    config.run.checkpoint_every = 1;
    run(config.clone(), &dir, false, None).unwrap();
    config.schedule.max_steps = 6;
    config.optimizer.lr = 1e30;
    config.schedule.warmup_steps = 0;
    config.optimizer.grad_clip = 0.0;
    let err = run(config, &dir, true, None).unwrap_err();
    let TrainError::Diverged {
        step, checkpoint, ..
    } = &err
    else {
        panic!("expected divergence, got {err}")
    };
    let checkpoint = checkpoint.as_ref().expect("the run had checkpoints");
    assert!(err.to_string().contains(&checkpoint.display().to_string()));
    assert_eq!(*step, 4, "{err}");
    let ckpt = Checkpoint::load(checkpoint).unwrap();
    assert_eq!(ckpt.step(), Some(3));
    let model = ckpt.model::<Flex>(&Default::default()).unwrap();
    assert_eq!(model.first_non_finite(), None);
    let ids = model
        .tokens(&[&[40, 550, 1775, 2910]], &Default::default())
        .unwrap();
    let logits: Vec<f32> = model.forward(ids).into_data().iter::<f32>().collect();
    assert!(logits.iter().all(|l| l.is_finite()));
    assert!(!checkpoint_files(&dir).contains(&"step_00000004.ckpt".to_string()));
}

/// The spike guard skips outlier updates, logs them, and resumes exactly: its window is
/// part of the checkpoint.
#[test]
fn the_spike_guard_skips_outliers_and_resumes_exactly() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let guarded = |name: &str| {
        let mut c = tiny_config(name, 8);
        c.guard = llm_train::GuardConfig {
            action: llm_train::GuardAction::Skip,
            window: 2,
            loss_z: 0.0,
            grad_z: 0.5,
        };
        c
    };
    let straight = run(guarded("g1"), &tmp.path().join("g1"), false, None).unwrap();
    assert!(
        straight.skipped_steps > 0,
        "the tight guard skipped nothing"
    );
    let metrics = std::fs::read_to_string(tmp.path().join("g1/metrics.jsonl")).unwrap();
    let skipped = metrics
        .lines()
        .filter(|l| l.contains("\"skipped\":true"))
        .count();
    assert_eq!(skipped, straight.skipped_steps);

    let dir = tmp.path().join("g2");
    let first = run(guarded("g2"), &dir, false, Some(4)).unwrap();
    let second = run(guarded("g2"), &dir, true, None).unwrap();
    let resumed: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(resumed, straight.losses);
    assert_eq!(
        first.skipped_steps + second.skipped_steps,
        straight.skipped_steps
    );

    // With `stop`, the first spike ends the run with an error that says so.
    let mut c = guarded("g3");
    c.guard.action = llm_train::GuardAction::Stop;
    let err = run(c, &tmp.path().join("g3"), false, None).unwrap_err();
    assert!(matches!(err, TrainError::Spike { .. }), "{err}");
    assert!(err.to_string().contains("standard deviations"), "{err}");
}

#[test]
fn an_unwritable_run_directory_fails_at_start_up() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = run(tiny_config("x", 2), &file.join("run"), false, None).unwrap_err();
    assert!(matches!(err, TrainError::RunDir { .. }), "{err}");
    assert!(
        err.to_string().contains("a-file/run") && err.to_string().contains("run directory"),
        "{err}"
    );
}

#[test]
fn resuming_with_a_different_model_shape_is_an_error() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shape");
    run(tiny_config("shape", 2), &dir, false, None).unwrap();
    let mut wider = tiny_config("shape", 4);
    wider.model.fields.insert("n_layer".into(), 3.into());
    let err = run(wider, &dir, true, None).unwrap_err().to_string();
    assert!(
        err.contains("cannot resume") && err.contains("model.n_layer: checkpoint 2, config 3"),
        "{err}"
    );
    // A fresh start where a run already is, is refused; resuming where there is nothing
    // to resume starts from step 0.
    let err = run(tiny_config("shape", 4), &dir, false, None).unwrap_err();
    assert!(
        matches!(err, TrainError::RunExists { step: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--resume"), "{err}");
    let fresh = run(
        tiny_config("shape", 2),
        &tmp.path().join("empty"),
        true,
        None,
    )
    .unwrap();
    assert_eq!((fresh.steps, fresh.losses.len()), (2, 2));
}

/// A config error leaves no run directory behind: everything is checked before it is made.
#[test]
fn a_bad_config_leaves_no_run_directory() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never");
    let mut config = tiny_config("never", 2);
    config.data.inputs = vec![tmp.path().join("missing.txt")];
    let err = run(config, &dir, false, None).unwrap_err().to_string();
    assert!(err.contains("missing.txt"), "{err}");
    let mut config = tiny_config("never", 2);
    config.data.tokenizer = "no-such-tokenizer".into();
    assert!(run(config, &dir, false, None).is_err());
    assert!(!dir.exists(), "a run directory was left behind");
    // A failure after the directory was made (a corpus shorter than one training row,
    // found once it is tokenized): the directory this attempt created is removed again.
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Too short to train on.").unwrap();
    let mut config = tiny_config("never", 2);
    config.data.inputs = vec![short];
    let err = run(config, &dir, false, None).unwrap_err().to_string();
    assert!(err.contains("tokens"), "{err}");
    assert!(!dir.exists(), "a run directory was left behind");
}

#[test]
fn config_files_name_the_bad_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"data": {"inputs": ["x.txt"]}, "run": {"batch_sise": 4}}"#,
    )
    .unwrap();
    let err = TrainConfig::load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains("bad.json") && err.contains("run.batch_sise"),
        "{err}"
    );
    std::fs::write(
        &path,
        r#"{"data": {"inputs": ["x.txt"]}, "optimizer": {"lr": "fast"}}"#,
    )
    .unwrap();
    let err = TrainConfig::load(&path, &[]).unwrap_err().to_string();
    assert!(err.contains("optimizer.lr"), "{err}");
    let err = TrainConfig::load(
        &path,
        &["optimizer.lr=0.1".into(), "schedule.warmup=3".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("schedule.warmup"), "{err}");
}

/// Every recipe in `configs/` parses and resolves: fine-tuning recipes (`finetune-*`) as
/// those, the rest as pre-training recipes.
#[test]
fn shipped_configs_are_valid() {
    let (mut pretrain, mut finetune) = (0, 0);
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("finetune-") {
            let c = llm_train::finetune::FinetuneConfig::load(&path, &[])
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(format!("finetune-{}.json", c.task), name);
            assert!(
                repo().join(&c.data.path).is_file(),
                "{name}: {}",
                c.data.path.display()
            );
            finetune += 1;
        } else {
            let c = TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            c.model
                .resolve(50257)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            pretrain += 1;
        }
    }
    assert!(
        pretrain >= 3,
        "expected at least 3 run recipes, found {pretrain}"
    );
    assert_eq!(
        finetune,
        llm_train::finetune::TASKS.len(),
        "a recipe per task"
    );
}

/// The same loop on wgpu (CI runs it on lavapipe, a software Vulkan driver).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_trains_a_few_steps() {
    type W = Autodiff<burn::backend::Wgpu>;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = TrainOptions::new(tmp.path().join("wgpu"));
    options.resume = false;
    let summary = train::<W>(tiny_config("wgpu", 4), options, Default::default()).unwrap();
    assert_eq!(summary.losses.len(), 4);
    assert!(summary.losses.iter().all(|l| l.is_finite()));
    assert!(
        summary.losses[3] < summary.losses[0],
        "{:?}",
        summary.losses
    );
}

/// A few steps on the default CPU backend learn something.
#[test]
fn the_loss_goes_down() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let s = run(
        tiny_config("down", 6),
        &tmp.path().join("down"),
        false,
        None,
    )
    .unwrap();
    assert!(s.losses[5] < s.losses[0] - 0.3, "{:?}", s.losses);
}

/// The Llama and Mixtral variants train, log, checkpoint and resume as GPT-2 does.
#[test]
fn variants_train_and_resume_exactly() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let llama = json!({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2,
                       "bias": false, "tie_word_embeddings": false, "n_inner": 96});
    let mut mixtral = llama.clone();
    mixtral["mlp"] = "moe".into();
    mixtral["n_expert"] = 4.into();
    mixtral["attention_window"] = 8.into();
    for (name, fields) in [("llama", llama), ("mixtral", mixtral)] {
        let config = |run: &str| {
            let mut c = tiny_config(run, 6);
            for (k, v) in fields.as_object().unwrap() {
                c.model.fields.insert(k.clone(), v.clone());
            }
            c
        };
        let straight = run(config(name), &tmp.path().join(name), false, None).unwrap();
        assert!(
            straight.losses[5] < straight.losses[0] - 0.2,
            "{name}: {:?}",
            straight.losses
        );
        let dir = tmp.path().join(format!("{name}-resumed"));
        let first = run(config(name), &dir, false, Some(3)).unwrap();
        let second = run(config(name), &dir, true, None).unwrap();
        let resumed: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
        assert_eq!(
            resumed, straight.losses,
            "{name}: per-step losses must be identical"
        );
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let evaluated: Value = serde_json::from_str(metrics.lines().nth(2).unwrap()).unwrap();
        assert_eq!(
            evaluated["val_router_aux_loss"].is_number(),
            name == "mixtral",
            "{name}: {evaluated}"
        );
    }
}

/// Data parallelism through Burn's collective all-reduce: two peers (both on the CPU here;
/// on a multi-GPU machine, one per GPU) must make the same updates as one device that
/// accumulates the same micro-batches.
#[test]
fn two_devices_make_the_same_updates_as_one() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config("ddp", 4);
    config.model.dropout = Some(0.0); // masks come from one shared CPU RNG here
    let one = llm_train::train_on::<B>(
        config.clone(),
        TrainOptions::new(tmp.path().join("one")),
        vec![Default::default()],
    )
    .unwrap();
    let two = llm_train::train_on::<B>(
        config,
        TrainOptions::new(tmp.path().join("two")),
        vec![Default::default(); 2],
    )
    .unwrap();
    assert_eq!(one.losses.len(), two.losses.len());
    for (a, b) in one.losses.iter().zip(&two.losses) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "one device {a}, two devices {b}"
        );
    }
    assert!(two.losses[3] < two.losses[0]);
}

/// DPO's log-probabilities, loss, rewards and gradients against PyTorch's on the fixture
/// (`tests/fixtures/dpo_reference.py` made the numbers), to 1e-5 (relative for values
/// above 1, such as summed log-probabilities).
#[test]
fn dpo_matches_pytorch_on_the_fixture() {
    use llm_data::dpo::PreferenceBatch;
    use llm_train::finetune::{response_logprob, DpoBatch, Policy};

    let device = Default::default();
    let text =
        std::fs::read_to_string(repo().join("crates/train/tests/fixtures/dpo-reference.json"))
            .unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    let (gpt, _) = pretrained::load_hf_dir::<B>(&fixture_dir(), &device).unwrap();
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|x| match x.as_array() {
                Some(row) => row.iter().map(|y| y.as_f64().unwrap() as f32).collect(),
                None => vec![x.as_f64().unwrap() as f32],
            })
            .collect()
    };
    let ids = |k: &str| {
        let flat: Vec<i64> = floats(&r[k]).iter().map(|&x| x as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [2, 12]), &device)
    };
    let mask =
        |k: &str| Tensor::<B, 2>::from_data(TensorData::new(floats(&r[k]), [2, 12]), &device);
    let vec1 = |v: &Value| Tensor::<B, 1>::from_data(TensorData::new(floats(v), [2]), &device);
    let close = |what: &str, ours: Vec<f32>, theirs: Vec<f32>| {
        assert_eq!(ours.len(), theirs.len(), "{what}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let tol = 1e-5 * b.abs().max(1.0);
            assert!((a - b).abs() <= tol, "{what}[{i}]: ours {a}, PyTorch {b}");
        }
    };
    let values = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
    for (case, mean) in [("mean", true), ("sum", false)] {
        let c = &r["cases"][case];
        let pc = response_logprob(&gpt, ids("chosen"), mask("chosen_mask"), mean);
        close(
            &format!("{case}: policy_chosen"),
            values(pc),
            floats(&c["policy_chosen"]),
        );
        let policy = Policy {
            gpt: gpt.clone(),
            beta: r["beta"].as_f64().unwrap(),
            mean,
        };
        let batch = DpoBatch {
            pairs: PreferenceBatch {
                chosen: ids("chosen"),
                rejected: ids("rejected"),
                chosen_mask: mask("chosen_mask"),
                rejected_mask: mask("rejected_mask"),
            },
            ref_chosen: vec1(&c["ref_chosen"]),
            ref_rejected: vec1(&c["ref_rejected"]),
        };
        let terms = policy.terms(batch);
        close(
            &format!("{case}: chosen_rewards"),
            values(terms.chosen_rewards),
            floats(&c["chosen_rewards"]),
        );
        close(
            &format!("{case}: rejected_rewards"),
            values(terms.rejected_rewards),
            floats(&c["rejected_rewards"]),
        );
        let loss = terms.loss;
        close(
            &format!("{case}: loss"),
            values(loss.clone()),
            vec![c["loss"].as_f64().unwrap() as f32],
        );
        let grads = loss.backward();
        let grad = |p: &Param<Tensor<B, 1>>| {
            p.val()
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let grad2 = |p: &Param<Tensor<B, 2>>, n: usize| {
            let g = p
                .val()
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            g[..n].to_vec()
        };
        let g = &c["grads"];
        let m = &policy.gpt;
        close(
            &format!("{case}: grad ln_f.weight"),
            grad(&m.ln_f.gamma),
            floats(&g["ln_f.weight"]),
        );
        let bias = m.h[1].mlp.as_ref().unwrap().c_proj.bias.as_ref().unwrap();
        close(
            &format!("{case}: grad h.1.mlp.c_proj.bias"),
            grad(bias),
            floats(&g["h.1.mlp.c_proj.bias"]),
        );
        close(
            &format!("{case}: grad h.0.attn.c_attn.weight"),
            grad2(&m.h[0].attn.c_attn.weight, 4 * 192),
            floats(&g["h.0.attn.c_attn.weight"]),
        );
        close(
            &format!("{case}: grad wpe.weight"),
            grad2(&m.wpe.as_ref().unwrap().weight, 12 * 64),
            floats(&g["wpe.weight"]),
        );
    }
}

/// `run.mc_eval_file`: each evaluation scores the items (HellaSwag's rule, as `eval-mc`)
/// and logs `mc_acc` / `mc_acc_norm`; the last ones are those of the final model.
#[test]
fn multiple_choice_is_scored_at_each_evaluation() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let items_file = repo().join("assets/eval/mc-sample.jsonl");
    let mut config = tiny_config("mc", 4);
    config.run.mc_eval_file = Some(items_file.clone());
    config.run.mc_eval_items = Some(8);
    let dir = tmp.path().join("mc");
    let summary = run(config, &dir, false, None).unwrap();
    let (acc, acc_norm) = (
        summary.val_metrics["mc_acc"],
        summary.val_metrics["mc_acc_norm"],
    );

    let ckpt = Checkpoint::load(&dir.join("checkpoints/step_00000004.ckpt")).unwrap();
    let model: Gpt<Flex> = ckpt.model(&Default::default()).unwrap();
    let items = llm_model::mc::read_items(&items_file).unwrap()[..8].to_vec();
    let tok = llm_bpe::Tokenizer::gpt2();
    let scores = llm_model::mc::score_items(&model, &tok, &items, 3, &Default::default()).unwrap();
    let expected = llm_model::mc::McSummary::of(&scores);
    assert_eq!((acc, acc_norm), (expected.acc, expected.acc_norm));
    let logged = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        logged.matches("\"mc_acc_norm\"").count(),
        2,
        "steps 3 and 4: {logged}"
    );

    // A missing file is refused before anything is written, naming the key.
    let mut bad = tiny_config("mc-bad", 2);
    bad.run.mc_eval_file = Some(tmp.path().join("hellaswag_val.jsonl"));
    let err = run(bad, &tmp.path().join("mc-bad"), false, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run.mc_eval_file") && err.contains("hellaswag_val.jsonl"),
        "{err}"
    );
    assert!(!tmp.path().join("mc-bad").exists());

    // So is an item the model cannot score (an ending longer than its context of 32).
    let long = tmp.path().join("long.jsonl");
    let ending = "and then it went on ".repeat(10);
    let item = json!({"ctx": "A man walks in.", "endings": [ending, "sits."], "label": 1});
    std::fs::write(&long, format!("{item}\n")).unwrap();
    let mut bad = tiny_config("mc-long", 2);
    bad.run.mc_eval_file = Some(long);
    let err = run(bad, &tmp.path().join("mc-long"), false, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run.mc_eval_file") && err.contains("long.jsonl"),
        "{err}"
    );
    assert!(err.contains("the model's context less one"), "{err}");
    assert!(!tmp.path().join("mc-long").exists());
}
