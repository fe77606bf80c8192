//! Training throughput (tokens/s, GFLOP/s) on the default CPU backend, side by side with
//! PyTorch eager (`bench/torch_gpt2_train.py`: same model, batch, AdamW, clipping, fp32,
//! 2 threads) measured in the same run; then a profile of one step by phase, and the RSS
//! after every step (it must stay flat).
//!
//! `cargo bench -p llm-train --bench train` (the peer needs `pip install torch`).
//! `-- --quick` runs fewer steps.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use llm_common::bench::{median, rss_mib, Rss};
use llm_model::backend::DefaultBackend;
use llm_model::{head_nll, Gpt, Gpt2Config};
use llm_train::{GptOptimizer, OptimizerConfig};

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

type B = burn::backend::Autodiff<DefaultBackend>;

/// (peer name, model config, batch, seq)
fn cases() -> Vec<(&'static str, Gpt2Config, usize, usize)> {
    let small = Gpt2Config {
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        n_positions: 128,
        ..Gpt2Config::small()
    };
    vec![
        ("gpt2", Gpt2Config::gpt2(), 4, 128),
        ("shakespeare-small", small.clone(), 8, 128),
        ("shakespeare-small", small, 16, 128),
    ]
}

/// Training FLOPs per token: 6 × the parameters that take part in matmuls (the blocks and the
/// tied LM head; position embeddings and LayerNorms excluded), plus 6 × attention's
/// `2 · n_layer · seq · n_embd` for QKᵀ and AV (forward 2×, backward 4×).
fn flops_per_token(c: &Gpt2Config, seq: usize) -> f64 {
    let e = c.n_embd as f64;
    let per_layer = 4.0 * e * e + 2.0 * e * c.inner_dim() as f64;
    let matmul_params = c.n_layer as f64 * per_layer + (c.vocab_size as f64) * e;
    6.0 * matmul_params + 6.0 * 2.0 * (c.n_layer * seq) as f64 * e
}

fn ids<Bk: Backend>(b: usize, t: usize, salt: usize, device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let v: Vec<i64> = (0..b * t)
        .map(|i| (((i + salt) * 7919 + 13) % 50257) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

#[derive(Default, Clone, Copy)]
struct Phases {
    forward: f64,
    loss: f64,
    backward: f64,
    optimizer: f64,
    data: f64,
}

/// One training step, timed by phase (the CPU backends run eagerly, so wall time between
/// syncs is the phase's time).
fn step(
    model: Gpt<B>,
    optim: &mut GptOptimizer<B>,
    b: usize,
    t: usize,
    i: usize,
    device: &burn::tensor::Device<B>,
) -> (Gpt<B>, Phases, f64) {
    let mut p = Phases::default();
    let clock = Instant::now();
    let x = ids::<B>(b, t, i, device);
    let y = ids::<B>(b, t, i + 1, device);
    p.data = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let hidden = model.forward_hidden(x); // [b, t, n_embd]
    B::sync(device).unwrap();
    p.forward = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let loss = head_nll(&model, hidden, y.reshape([b * t])).mean(); // the trainer's fused head + loss
    let value: f64 = loss.clone().into_scalar().elem();
    p.loss = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    B::sync(device).unwrap();
    p.backward = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let (model, _norm) = optim.step(6e-4, model, grads);
    B::sync(device).unwrap();
    p.optimizer = clock.elapsed().as_secs_f64();
    (model, p, value)
}

struct Ours {
    tokens_per_s: f64,
    phases: Phases,
    rss: Vec<f64>,
}

fn run_ours(config: &Gpt2Config, b: usize, t: usize, steps: usize) -> Ours {
    let device = Default::default();
    <B as Backend>::seed(&device, 0);
    let mut model: Gpt<B> = config.init(&device).unwrap();
    let mut optim = GptOptimizer::<B>::new(&OptimizerConfig::default());
    let mut secs = Vec::new();
    let mut rss = Vec::new();
    let mut total = Phases::default();
    for i in 0..=steps {
        let start = Instant::now();
        let (m, p, _) = step(model, &mut optim, b, t, i, &device);
        model = m;
        if i > 0 {
            secs.push(start.elapsed().as_secs_f64());
            total.forward += p.forward;
            total.loss += p.loss;
            total.backward += p.backward;
            total.optimizer += p.optimizer;
            total.data += p.data;
        }
        rss.push(rss_mib(Rss::Now));
    }
    let _ = model.valid();
    Ours {
        tokens_per_s: (b * t) as f64 / median(secs),
        phases: total,
        rss,
    }
}

/// The command line: `-- --quick` runs fewer steps, `--only NAME` one config, `--no-peer`
/// skips PyTorch, `--torch-compile` also times PyTorch under torch.compile (for information).
struct Args {
    steps: usize,
    only: Option<String>,
    no_peer: bool,
    torch_compile: bool,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let flag = |name: &str| args.iter().any(|a| a == name);
        Args {
            steps: if flag("--quick") { 3 } else { 6 },
            only: args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1).cloned()),
            no_peer: flag("--no-peer"),
            torch_compile: flag("--torch-compile"),
        }
    }
}

/// PyTorch on the same configs (`bench/torch_gpt2_train.py`), or `None` with the reason
/// printed when it cannot run.
fn run_peer(args: &Args, spec: &[String]) -> Option<serde_json::Value> {
    if args.no_peer {
        println!("PyTorch peer skipped: --no-peer");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/torch_gpt2_train.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--threads", "2", "--steps", &args.steps.to_string()])
        .args(["--configs", &spec.join(",")])
        .args(args.torch_compile.then_some("--compile"))
        .output();
    match out {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!("PyTorch peer skipped: {}", err.lines().last().unwrap_or(""));
            None
        }
        Err(e) => {
            println!("PyTorch peer skipped: cannot run python3: {e}");
            None
        }
    }
}

/// One row of the throughput table, and torch.compile's figure when the peer has it.
fn print_throughput(
    key: &str,
    ours: &Ours,
    gflop_per_token: f64,
    peer: Option<&serde_json::Value>,
) {
    let f = gflop_per_token;
    let result = peer.map(|p| &p["results"][key]);
    match result.and_then(|r| r["tokens_per_s"].as_f64()) {
        Some(theirs) => println!(
            "{key:<26} {:>12.1} {:>9.1} {theirs:>14.1} {:>9.1} {:>7.2}x",
            ours.tokens_per_s,
            ours.tokens_per_s * f,
            theirs * f,
            ours.tokens_per_s / theirs
        ),
        None => println!(
            "{key:<26} {:>12.1} {:>9.1} {:>14} {:>9} {:>8}",
            ours.tokens_per_s,
            ours.tokens_per_s * f,
            "-",
            "-",
            "-"
        ),
    }
    if let Some(compiled) = result.and_then(|r| r["compiled_tokens_per_s"].as_f64()) {
        println!(
            "{:<26} torch.compile: {compiled:.1} tok/s, llm-e2e at {:.2}x",
            "",
            ours.tokens_per_s / compiled
        );
    }
}

/// Where each config's step time goes, and its RSS after every step.
fn print_profile(name: &str, params: usize, ours: &Ours) {
    let p = ours.phases;
    let total = p.forward + p.loss + p.backward + p.optimizer + p.data;
    let pct = |x: f64| 100.0 * x / total;
    println!(
        "{name:<26} ({params} params): blocks {:.0}%, LM head + loss {:.0}%, backward {:.0}%, clip+AdamW {:.0}%, data {:.1}%",
        pct(p.forward),
        pct(p.loss),
        pct(p.backward),
        pct(p.optimizer),
        pct(p.data)
    );
    let rss: Vec<String> = ours.rss.iter().map(|r| format!("{r:.0}")).collect();
    println!("{:<26} RSS after each step (MB): {}", "", rss.join(" "));
}

fn main() {
    llm_model::alloc::keep_freed_memory();
    let args = Args::parse();
    let steps = args.steps;
    let device: burn::tensor::Device<B> = Default::default();
    let cases: Vec<_> = cases()
        .into_iter()
        .filter(|c| args.only.as_ref().is_none_or(|o| o == c.0))
        .collect();
    let spec: Vec<String> = cases
        .iter()
        .map(|(name, _, b, t)| format!("{name}:{b}x{t}"))
        .collect();
    let peer = run_peer(&args, &spec);

    println!(
        "\n== training step (forward, loss, backward, clip, AdamW), fp32, backend {} ({} threads), median of {steps} steps ==",
        B::name(&device),
        rayon::current_num_threads()
    );
    println!(
        "{:<26} {:>12} {:>9} {:>14} {:>9} {:>8}",
        "config", "llm-e2e tok/s", "GFLOP/s", "PyTorch tok/s", "GFLOP/s", "ratio"
    );
    let mut profiles = Vec::new();
    for ((_, config, b, t), key) in cases.into_iter().zip(&spec) {
        let ours = run_ours(&config, b, t, steps);
        print_throughput(key, &ours, flops_per_token(&config, t) / 1e9, peer.as_ref());
        profiles.push((key.clone(), config.num_params(), ours));
    }
    println!("(GFLOP/s = tokens/s × 6 × matmul parameters + attention; the same count for both)");

    println!("\n== where a step's time goes (sum over {steps} steps) ==");
    for (name, params, ours) in &profiles {
        print_profile(name, *params, ours);
    }
    println!(
        "peak RSS: llm-e2e {:.0} MB (all configs), PyTorch {} MB",
        rss_mib(Rss::Peak),
        peer.as_ref()
            .and_then(|p| p["peak_rss_mb"].as_f64())
            .map_or("-".into(), |m| format!("{m:.0}"))
    );
}
