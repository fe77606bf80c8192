//! Generation speed and memory, side by side with llama.cpp in the same run.
//!
//! `cargo bench -p llm-infer --bench decode` (the peer needs
//! `pip install llama-cpp-python gguf numpy`; `-- --no-peer` skips it).
//!
//! GPT-2 124M's shape with seeded random weights (no download), written once as a Hugging
//! Face directory that both sides load: llm-e2e through `cargo xtask generate`'s path, and
//! llama.cpp after `bench/llama_peer.py` converts it to GGUF f32 and q8_0. Each quantization
//! of each side runs in its own process, so each peak RSS is its own. Measured:
//! - time to first token for a 512-token prompt (median of 3);
//! - decode tok/s at batch 1: 128 new tokens after a 32-token prompt (median of 3);
//! - aggregate decode tok/s at batch 8 (8 prompts of 32 tokens, 128 new tokens each);
//! - peak RSS after the batch-1 work, and after batch 8 (its cache adds 8 slots); the KV
//!   cache is f16 on both sides (llama.cpp's default) and holds the longest request
//!   ([`CAPACITY`] positions per slot, as `cargo xtask generate` sizes it; llama.cpp rounds
//!   its context up to a multiple of 256);
//! - a memory-bandwidth probe, to say how close decode is to bandwidth ÷ bytes per token;
//! - where a decode step's time goes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Device, Tensor};
use llm_common::bench::{median, median_secs, rss_mib, Rss};
use llm_infer::{Engine, InferModel, KvDtype, Quant, Request, SamplingParams, SlotCache};
use llm_model::backend::DefaultBackend;
use llm_model::pretrained::{self, ModelSource};
use llm_model::{Gpt, Gpt2Config, KernelBackend, Segment};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

type B = DefaultBackend;

const TTFT_PROMPT: usize = 512;
const DECODE_PROMPT: usize = 32;
const NEW: usize = 128;
const BATCH: usize = 8;
/// The KV cache in f16 on both sides (llama.cpp's default).
const KV: KvDtype = KvDtype::F16;
/// Positions per sequence in the batch-1 cache: the longest request (the TTFT prompt and
/// its token); the peer's context is the same.
const CAPACITY: usize = TTFT_PROMPT + 1;
/// Positions per sequence at batch 8.
const BATCH_CAPACITY: usize = DECODE_PROMPT + NEW + 1;

fn new_engine(
    model: InferModel<B>,
    slots: usize,
    capacity: usize,
    device: &Device<B>,
) -> Engine<B> {
    let cache = SlotCache::with_capacity(&model.config, slots, capacity, KV, device).unwrap();
    Engine::with_cache(model, None, cache)
}

/// The bench's deterministic prompt (the same formula as `bench/llama_peer.py`).
fn prompt(n: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (((i + salt) * 7919 + 13) % 50257) as u32)
        .collect()
}

fn request(prompt: Vec<u32>, new: usize) -> Request {
    Request {
        prompt,
        params: SamplingParams {
            max_new_tokens: new,
            ..Default::default()
        },
        truncate_left: false,
        prompt_logprobs: false,
    }
}

// ---- one side, one quantization, in its own process ----------------------------------

fn ttft(engine: &mut Engine<B>) -> f64 {
    let times = (0..3).map(|r| {
        let start = Instant::now();
        engine.add(request(prompt(TTFT_PROMPT, r), 1)).unwrap();
        let events = engine.step().unwrap();
        assert_eq!(events.len(), 1);
        start.elapsed().as_secs_f64()
    });
    median(times.collect())
}

/// Aggregate new tokens per second of `batch` sequences, after their prefill; and the
/// RSS after every step.
fn decode(engine: &mut Engine<B>, batch: usize, salt: usize) -> (f64, Vec<f64>) {
    for s in 0..batch {
        // One more token than timed: the prefill step makes the first.
        engine
            .add(request(prompt(DECODE_PROMPT, salt + s), NEW + 1))
            .unwrap();
    }
    engine.step().unwrap(); // prefill of every prompt, in one pass
    let mut rss = Vec::with_capacity(NEW);
    let start = Instant::now();
    for _ in 0..NEW {
        let events = engine.step().unwrap();
        assert_eq!(events.len(), batch);
        rss.push(rss_mib(Rss::Now));
    }
    let rate = (batch * NEW) as f64 / start.elapsed().as_secs_f64();
    assert_eq!(engine.active(), 0);
    (rate, rss)
}

/// Median seconds of `f` over a few runs.
fn time(f: impl FnMut()) -> f64 {
    median_secs(5, f)
}

/// Where one batch-1 decode step goes. The parts are timed at the step's shapes, in the
/// step's order (every layer's weights once, so that none is still in cache), each part in
/// one pass as the engine runs it ([`KernelBackend::run_pass`]).
fn profile(model: &InferModel<B>, step_s: f64, device: &Device<B>) -> Value {
    let c = model.config.n_embd;
    let x = Tensor::<B, 2>::ones([1, c], device);
    let x4 = Tensor::<B, 2>::ones([1, model.config.inner_dim()], device);
    let sync = |t: Tensor<B, 2>| B::sync(&t.device()).unwrap();
    let blocks = time(|| {
        B::run_pass(|| {
            for b in &model.h {
                let mlp = b.mlp.dense().expect("GPT-2's MLP");
                sync(b.c_attn.forward(x.clone()));
                sync(b.c_proj.forward(x.clone()));
                sync(mlp.c_fc.forward(x.clone()));
                sync(mlp.c_proj.forward(x4.clone()));
            }
        })
    });
    let head = time(|| B::run_pass(|| sync(model.wte.linear(x.clone(), None))));
    let mut cache = SlotCache::<B>::with_dtype(&model.config, 1, KV, device).unwrap();
    let qkv = Tensor::<B, 2>::ones([1, 3 * c], device);
    let seg = [Segment {
        slot: 0,
        pos: DECODE_PROMPT + NEW / 2,
        len: 1,
    }];
    let layers = model.config.n_layer;
    let attention = time(|| {
        B::run_pass(|| {
            for layer in 0..layers {
                sync(cache.attend(layer, qkv.clone(), &seg, None));
            }
        })
    });
    let rest = (step_s - blocks - head - attention).max(0.0);
    let pct = |v: f64| (1000.0 * v / step_s).round() / 10.0;
    json!({
        "step_ms": step_s * 1e3,
        "block_matmuls_pct": pct(blocks),
        "lm_head_pct": pct(head),
        "attention_pct": pct(attention),
        "rest_pct": pct(rest),
    })
}

/// One MLP up-projection at batch 1 (`[1, 768] · [768, 3072]`), three ways: Burn's own
/// quantized tensors (Q8S, blocks of 32), Burn's f32 matmul, and this crate's kernels.
/// Burn dequantizes a quantized tensor to f32 for every matmul, so it cannot be faster.
fn burn_quantized(model: &InferModel<B>, device: &Device<B>) -> Value {
    use burn::tensor::quantization::{BlockSize, QuantLevel, QuantScheme, QuantValue};
    let c_fc = &model.h[0].mlp.dense().expect("GPT-2's MLP").c_fc;
    let [n, k] = c_fc.weight.dims();
    let x = Tensor::<B, 2>::ones([1, k], device);
    let w = Tensor::<B, 2>::random([k, n], burn::tensor::Distribution::Default, device);
    let scheme = QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_level(QuantLevel::Block(BlockSize::new([32])));
    let wq = w.clone().quantize_dynamic(&scheme);
    let sync = |t: Tensor<B, 2>| B::sync(&t.device()).unwrap();
    let ms = |f: &mut dyn FnMut()| 1e3 * time(f);
    json!({
        "burn_q8s_matmul_ms": ms(&mut || sync(x.clone().matmul(wq.clone()))),
        "burn_f32_matmul_ms": ms(&mut || sync(x.clone().matmul(w.clone()))),
        "ours_ms": ms(&mut || sync(c_fc.forward(x.clone()))),
    })
}

fn run_case(dir: &Path, quant: Quant) -> Value {
    let device = Default::default();
    let start = Instant::now();
    let (gpt, _) = pretrained::load::<B>(&ModelSource::HfDir(dir.into()), &device).unwrap();
    let model = InferModel::from_gpt(gpt, quant);
    let load_s = start.elapsed().as_secs_f64();
    let weight_mb = model.weight_bytes() as f64 / (1 << 20) as f64;
    let rss_loaded = rss_mib(Rss::Peak);
    let wpe_bytes = model
        .wpe
        .as_ref()
        .map_or(0, |w| 4 * w.shape().num_elements());
    let mut engine = new_engine(model, 1, CAPACITY, &device);
    let cache_mb = engine.cache().bytes() as f64 / (1 << 20) as f64;
    let ttft_s = ttft(&mut engine);
    let rates: Vec<(f64, Vec<f64>)> = (0..3).map(|r| decode(&mut engine, 1, 100 * r)).collect();
    let rss_steps = rates[1].1.clone();
    let decode_tok_s = median(rates.iter().map(|r| r.0).collect());
    let peak_batch1 = rss_mib(Rss::Peak);
    let profile = profile(engine.model(), 1.0 / decode_tok_s, &device);
    let burn_quantized = burn_quantized(engine.model(), &device);
    let model = engine.model().clone();
    drop(engine);
    let mut engine = new_engine(model, BATCH, BATCH_CAPACITY, &device);
    let (batch_tok_s, _) = decode(&mut engine, BATCH, 1000);
    json!({
        "quant": format!("{quant:?}").to_lowercase(),
        "load_s": load_s,
        "weights_mb": weight_mb,
        "wpe_bytes": wpe_bytes,
        "cache_mb_per_slot": cache_mb,
        "rss_after_load_mb": rss_loaded,
        "ttft_s": ttft_s,
        "decode_tok_s": decode_tok_s,
        "batch_tok_s": batch_tok_s,
        "peak_rss_mb": peak_batch1,
        "peak_rss_batch_mb": rss_mib(Rss::Peak),
        "rss_first_last_step_mb": [rss_steps[0], rss_steps[rss_steps.len() - 1]],
        "profile": profile,
        "burn_quantized": burn_quantized,
    })
}

// ---- the driver ----------------------------------------------------------------------

/// GPT-2 124M with seeded random weights, as a Hugging Face directory.
fn write_model(dir: &Path) {
    let device = Default::default();
    B::seed(&device, 7);
    let config = Gpt2Config::gpt2();
    let model: Gpt<B> = config.init(&device).unwrap();
    llm_model::weights::save_hf_dir(&model, &config, dir).unwrap();
}

/// Read bandwidth in GB/s: 2 threads summing disjoint halves of a 1 GiB array (best of 5).
fn bandwidth_gb_s() -> f64 {
    let n = (1usize << 30) / 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let threads = rayon::current_num_threads();
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            let sums: Vec<f32> = std::thread::scope(|s| {
                let handles: Vec<_> = data
                    .chunks(n.div_ceil(threads))
                    .map(|part| s.spawn(move || sum_lanes(part)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            std::hint::black_box(sums);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    4.0 * n as f64 / best / 1e9
}

/// A sum with 16 independent lanes, so the loads and not the adds set the pace.
fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for chunk in v.chunks_exact(16) {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum()
}

fn child(exe: &Path, dir: &Path, quant: &str) -> Value {
    let out = Command::new(exe)
        .args(["--case", quant, "--dir", dir.to_str().unwrap()])
        .output()
        .expect("running the bench's own case");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a case's JSON")
}

fn peer(dir: &Path, quant: &str) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gguf = dir.join(format!("gpt2-{quant}.gguf"));
    let out = Command::new("python3")
        .arg(root.join("bench/llama_peer.py"))
        .args(["--hf-dir", dir.to_str().unwrap(), "--quant", quant])
        .args(["--vocab-dir", root.join("assets/gpt2").to_str().unwrap()])
        .args(["--gguf", gguf.to_str().unwrap(), "--threads", "2"])
        .args(["--n-ctx", &CAPACITY.to_string()])
        .args(["--batch-n-ctx", &BATCH_CAPACITY.to_string()])
        .output();
    match out {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!(
                "llama.cpp peer skipped: {}",
                err.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!("llama.cpp peer skipped: cannot run python3: {e}");
            None
        }
    }
}

fn row(name: &str, ours: f64, theirs: Option<f64>, fmt: impl Fn(f64) -> String, higher: bool) {
    let ratio = theirs.map_or("-".into(), |t| {
        format!("{:.2}x", if higher { ours / t } else { t / ours })
    });
    println!(
        "{name:<28} {:>14} {:>14} {ratio:>8}",
        fmt(ours),
        theirs.map_or("-".into(), &fmt)
    );
}

fn main() {
    llm_model::alloc::keep_freed_memory();
    llm_model::alloc::commit_lazily();
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    if let (Some(quant), Some(dir)) = (arg("--case"), arg("--dir")) {
        let quant: Quant = quant.parse().unwrap();
        println!("{}", run_case(Path::new(&dir), quant));
        return;
    }
    if let Some(dir) = arg("--write-model") {
        write_model(Path::new(&dir)); // to profile one case alone: `--case f32 --dir DIR`
        return;
    }
    let no_peer = args.iter().any(|a| a == "--no-peer");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("llm-infer-decode-{}", std::process::id()));
    write_model(&dir);
    let exe = std::env::current_exe().unwrap();
    println!("host: {}", llm_model::kernels::host_summary());
    let bandwidth = bandwidth_gb_s();
    println!(
        "memory bandwidth (read, {} threads): {bandwidth:.1} GB/s",
        rayon::current_num_threads()
    );

    let mut results = Vec::new();
    for (ours, theirs) in [("f32", "f32"), ("q8", "q8_0")] {
        let o = child(&exe, &dir, ours);
        let t = if no_peer { None } else { peer(&dir, theirs) };
        results.push((ours, o, t));
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\n== GPT-2 124M, random weights, {} threads: llm-e2e engine vs llama.cpp, same run ==",
        rayon::current_num_threads()
    );
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "", "llm-e2e", "llama.cpp", "ratio"
    );
    for (quant, o, t) in &results {
        let get = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let peer = |k: &str| t.as_ref().map(|t| get(t, k));
        let secs = |v: f64| format!("{v:.3} s");
        let rate = |v: f64| format!("{v:.1} tok/s");
        let mb = |v: f64| format!("{v:.0} MiB");
        row(
            &format!("[{quant}] TTFT, 512 tokens"),
            get(o, "ttft_s"),
            peer("ttft_s"),
            secs,
            false,
        );
        row(
            &format!("[{quant}] decode, batch 1"),
            get(o, "decode_tok_s"),
            peer("decode_tok_s"),
            rate,
            true,
        );
        row(
            &format!("[{quant}] decode, batch 8"),
            get(o, "batch_tok_s"),
            peer("batch_tok_s"),
            rate,
            true,
        );
        row(
            &format!("[{quant}] peak RSS, batch 1"),
            get(o, "peak_rss_mb"),
            peer("peak_rss_mb"),
            mb,
            false,
        );
        println!(
            "{:<28} weights {:.0} MiB, KV cache {:.0} MiB per slot, peak RSS at batch 8 {:.0} MiB, RSS first/last decode step {}",
            "",
            get(o, "weights_mb"),
            get(o, "cache_mb_per_slot"),
            get(o, "peak_rss_batch_mb"),
            o["rss_first_last_step_mb"]
        );
        // Decode streams every weight once per token, except wpe (one row).
        let bytes_per_token = get(o, "weights_mb") * (1 << 20) as f64 - get(o, "wpe_bytes");
        let bound = bandwidth * 1e9 / bytes_per_token;
        println!(
            "{:<28} bandwidth bound {bound:.0} tok/s ({:.0} MB/token): batch-1 decode at {:.0}% of it",
            "",
            bytes_per_token / 1e6,
            100.0 * get(o, "decode_tok_s") / bound
        );
        println!("{:<28} decode step profile: {}", "", o["profile"]);
        println!(
            "{:<28} one [1, 768]·[768, 3072] matmul, ms: {}",
            "", o["burn_quantized"]
        );
        if let Some(t) = t {
            println!("{:<28} peer: {} ({})", "", t["peer"], t["system_info"]);
        }
    }
}
