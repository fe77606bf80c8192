//! Fine-tuning step throughput on the default CPU backend, side by side with PyTorch eager
//! (`bench/torch_finetune_step.py`) measured in the same run: an instruction fine-tuning
//! (SFT) step and a DPO step (policy and reference, chosen and rejected: four sequences a
//! pair) on the shakespeare-small shape, batch 8 × 128 tokens; and SFT with LoRA against
//! full fine-tuning. Each case runs in its own process, so its peak RSS is its own.
//!
//! `cargo bench -p llm-train --bench finetune` (the peer needs `pip install torch`);
//! `-- --no-peer` skips PyTorch.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use llm_common::bench::{median, rss_mib, Rss};
use llm_data::dpo::PreferenceBatch;
use llm_data::NextTokenBatch;
use llm_model::backend::DefaultBackend;
use llm_model::{Gpt, Gpt2Config, LoraConfig};
use llm_train::finetune::{response_logprob, DpoBatch, Policy};
use llm_train::{GptOptimizer, Objective, OptimizerConfig, Trainable};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

type B = burn::backend::Autodiff<DefaultBackend>;
type Inner = DefaultBackend;

const BATCH: usize = 8;
const SEQ: usize = 128;
const CASES: [&str; 3] = ["sft", "sft-lora", "dpo"];

fn config() -> Gpt2Config {
    Gpt2Config {
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        n_positions: 128,
        ..Gpt2Config::small()
    }
    .with_dropout(0.0)
}

fn optimizer() -> OptimizerConfig {
    OptimizerConfig {
        lr: 5e-5,
        beta2: 0.999,
        grad_clip: 0.0,
        ..OptimizerConfig::default()
    }
}

fn ids<Bk: Backend>(salt: usize, device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let v: Vec<i64> = (0..BATCH * SEQ)
        .map(|i| (((i + salt) * 7919 + 13) % 50257) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [BATCH, SEQ]), device)
}

/// The median seconds of `steps` calls of `step` after one warm-up.
fn timed(steps: usize, mut step: impl FnMut(usize)) -> f64 {
    let mut secs = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        step(i);
        if i > 0 {
            secs.push(start.elapsed().as_secs_f64());
        }
    }
    median(secs)
}

/// One optimizer step of an objective.
fn update<M: Objective<B>>(model: M, optim: &mut GptOptimizer<B, M>, batch: M::Batch) -> M {
    let grads = GradientsParams::from_grads(model.loss(batch).backward(), &model);
    optim.step(5e-5, model, grads).0
}

fn sft(lora: bool, steps: usize) -> (f64, usize) {
    let device = Default::default();
    <B as Backend>::seed(&device, 0);
    let mut model: Gpt<B> = config().init(&device).unwrap();
    if lora {
        model = model
            .with_lora(&LoraConfig::new(8, Some(16.0)), &device)
            .unwrap();
        model = Trainable::Lora.apply(model, 4);
    }
    let trainable = llm_train::trainable::count(&model);
    let mut optim = GptOptimizer::<B, Gpt<B>>::new(&optimizer());
    let mut slot = Some(model);
    let secs = timed(steps, |i| {
        let targets: Vec<i64> = (0..BATCH * SEQ)
            .map(|j| match j % SEQ > SEQ * 3 / 4 {
                true => -100,
                false => (((j + i + 1) * 7919 + 13) % 50257) as i64,
            })
            .collect();
        let batch = NextTokenBatch {
            inputs: ids::<B>(i, &device),
            targets: Tensor::from_data(TensorData::new(targets, [BATCH, SEQ]), &device),
        };
        let model = slot.take().unwrap();
        slot = Some(update(model, &mut optim, batch));
    });
    let _ = slot.unwrap().valid();
    ((BATCH * SEQ) as f64 / secs, trainable)
}

fn dpo(steps: usize) -> (f64, usize) {
    let device = Default::default();
    <B as Backend>::seed(&device, 0);
    let gpt: Gpt<B> = config().init(&device).unwrap();
    let reference: Gpt<Inner> = gpt.valid();
    let trainable = llm_train::trainable::count(&gpt);
    let mut slot = Some(Policy {
        gpt,
        beta: 0.1,
        mean: true,
    });
    let mut optim = GptOptimizer::<B, Policy<B>>::new(&optimizer());
    let mask: Vec<f32> = (0..BATCH * SEQ)
        .map(|j| ((j % SEQ) >= SEQ / 4) as u8 as f32)
        .collect();
    let secs = timed(steps, |i| {
        let pairs = |dev: &burn::tensor::Device<Inner>| PreferenceBatch::<Inner> {
            chosen: ids::<Inner>(2 * i, dev),
            rejected: ids::<Inner>(2 * i + 1, dev),
            chosen_mask: Tensor::from_data(TensorData::new(mask.clone(), [BATCH, SEQ]), dev),
            rejected_mask: Tensor::from_data(TensorData::new(mask.clone(), [BATCH, SEQ]), dev),
        };
        // The reference: no autodiff, as the task computes it when a batch is drawn.
        let p = pairs(&device);
        let rc = response_logprob(&reference, p.chosen, p.chosen_mask, true);
        let rr = response_logprob(&reference, p.rejected, p.rejected_mask, true);
        let p = pairs(&device);
        let batch = DpoBatch::<B> {
            pairs: PreferenceBatch {
                chosen: Tensor::from_inner(p.chosen),
                rejected: Tensor::from_inner(p.rejected),
                chosen_mask: Tensor::from_inner(p.chosen_mask),
                rejected_mask: Tensor::from_inner(p.rejected_mask),
            },
            ref_chosen: Tensor::from_inner(rc),
            ref_rejected: Tensor::from_inner(rr),
        };
        let model = slot.take().unwrap();
        slot = Some(update(model, &mut optim, batch));
    });
    ((2 * BATCH * SEQ) as f64 / secs, trainable)
}

/// Runs one case in this process and prints its JSON line.
fn child(case: &str, steps: usize) {
    llm_model::alloc::keep_freed_memory();
    let (tokens_per_s, trainable) = match case {
        "sft" => sft(false, steps),
        "sft-lora" => sft(true, steps),
        _ => dpo(steps),
    };
    println!(
        "{}",
        json!({"tokens_per_s": tokens_per_s, "trainable": trainable, "peak_rss_mb": rss_mib(Rss::Peak)})
    );
}

fn run(cmd: &mut Command) -> Option<Value> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!("skipped: {}", err.lines().last().unwrap_or(""));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let steps = if quick { 3 } else { 6 };
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return child(&args[i + 1], steps);
    }
    let peer = match args.iter().any(|a| a == "--no-peer") {
        true => None,
        false => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/torch_finetune_step.py");
            run(Command::new("python3").arg(script).args([
                "--threads",
                "2",
                "--steps",
                &steps.to_string(),
                "--batch",
                &BATCH.to_string(),
                "--seq",
                &SEQ.to_string(),
            ]))
        }
    };
    let exe = std::env::current_exe().expect("the bench binary");
    let ours: Vec<(&str, Option<Value>)> = CASES
        .iter()
        .map(|case| {
            (
                *case,
                run(Command::new(&exe).args(["--case", case, if quick { "--quick" } else { "" }])),
            )
        })
        .collect();
    let device: burn::tensor::Device<B> = Default::default();
    println!(
        "\n== fine-tuning steps, shakespeare-small shape, batch {BATCH} × {SEQ}, fp32, backend {} (2 threads), median of {steps} steps ==",
        B::name(&device)
    );
    println!(
        "{:<10} {:>13} {:>12} {:>14} {:>8} {:>10}",
        "step", "trainable", "llm-e2e tok/s", "PyTorch tok/s", "ratio", "peak RSS"
    );
    for (case, v) in &ours {
        let Some(v) = v else { continue };
        let theirs = match *case {
            "sft" => peer.as_ref().and_then(|p| p["sft_tokens_per_s"].as_f64()),
            "dpo" => peer.as_ref().and_then(|p| p["dpo_tokens_per_s"].as_f64()),
            _ => None,
        };
        let ours_tps = v["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{case:<10} {:>13} {:>12.0} {:>14} {:>8} {:>8.0} MB",
            v["trainable"],
            ours_tps,
            theirs.map_or("-".into(), |t| format!("{t:.0}")),
            theirs.map_or("-".into(), |t| format!("{:.2}x", ours_tps / t)),
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "(DPO tokens are the chosen and rejected tokens of a step; PyTorch peak RSS {} MB, SFT and DPO in one process)",
        peer.as_ref()
            .and_then(|p| p["peak_rss_mb"].as_f64())
            .map_or("-".into(), |m| format!("{m:.0}"))
    );
}
