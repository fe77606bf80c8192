//! GPT-2 124M forward-pass throughput (tokens/s) on the default CPU backend, at batch 1×256
//! and 4×128, side by side with PyTorch eager (`bench/torch_gpt2_forward.py`, fp32,
//! 2 threads) measured in the same run; also peak RSS of both.
//!
//! `cargo bench -p llm-model --bench forward` (the peer needs `pip install torch`).

use std::path::Path;
use std::process::Command;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput};
use llm_common::bench::{median_secs, rss_mib, Rss};
use llm_model::backend::DefaultBackend;
use llm_model::{Gpt, Gpt2Config, KernelBackend};

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

type B = DefaultBackend;
const SHAPES: [(usize, usize); 2] = [(1, 256), (4, 128)];

fn ids<Bk: Backend>(b: usize, t: usize, device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let v: Vec<i64> = (0..b * t)
        .map(|i| ((i * 7919 + 13) % 50257) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

fn forward<Bk: KernelBackend>(model: &Gpt<Bk>, ids: &Tensor<Bk, 2, Int>, device: &Bk::Device) {
    let logits = model.forward(ids.clone());
    Bk::sync(device).unwrap();
    std::hint::black_box(logits);
}

/// Median tokens/s over `runs` runs after a warm-up: the same method as the Python peer.
fn tokens_per_s(model: &Gpt<B>, b: usize, t: usize, runs: usize) -> f64 {
    let device = Default::default();
    let ids = ids::<B>(b, t, &device);
    (b * t) as f64 / median_secs(runs, || forward(model, &ids, &device))
}

fn main() {
    llm_model::alloc::keep_freed_memory();
    let device = Default::default();
    let config = Gpt2Config::gpt2();
    let model: Gpt<B> = config.init(&device).unwrap();

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("gpt2-124m-forward");
    g.sample_size(10);
    for (b, t) in SHAPES {
        let input = ids::<B>(b, t, &device);
        g.throughput(Throughput::Elements((b * t) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{b}x{t}")),
            &input,
            |bench, input| bench.iter(|| forward(&model, input, &device)),
        );
    }
    g.finish();
    c.final_summary();

    // The peer, in the same run.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/torch_gpt2_forward.py");
    let peer = Command::new("python3")
        .arg(&script)
        .args(["--threads", "2", "--runs", "10"])
        .output();
    let peer: Option<serde_json::Value> = match peer {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!(
                "\nPyTorch peer skipped: {}",
                err.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!("\nPyTorch peer skipped: cannot run python3: {e}");
            None
        }
    };
    let threads = rayon::current_num_threads();
    println!(
        "\n== GPT-2 124M forward, fp32, {} parameters, backend {} ({threads} threads) ==",
        config.num_params(),
        B::name(&device)
    );
    let peer_name = peer
        .as_ref()
        .and_then(|p| p["peer"].as_str())
        .unwrap_or("PyTorch (not run)");
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "batch", "llm-e2e tok/s", "PyTorch tok/s", "ratio"
    );
    for (b, t) in SHAPES {
        let ours = tokens_per_s(&model, b, t, 10);
        let key = format!("{b}x{t}");
        match peer.as_ref().and_then(|p| p["tokens_per_s"][&key].as_f64()) {
            Some(theirs) => println!(
                "{key:<10} {ours:>14.1} {theirs:>14.1} {:>7.2}x",
                ours / theirs
            ),
            None => println!("{key:<10} {ours:>14.1} {:>14} {:>8}", "-", "-"),
        }
    }
    let gflop_per_token = 2.0 * config.num_params() as f64 / 1e9;
    println!("(about {gflop_per_token:.2} GFLOP per token, attention excluded; peer: {peer_name})");
    println!(
        "peak RSS: llm-e2e {:.0} MB, PyTorch {} MB",
        rss_mib(Rss::Peak),
        peer.as_ref()
            .and_then(|p| p["peak_rss_mb"].as_f64())
            .map_or("-".into(), |m| format!("{m:.0}"))
    );
}
