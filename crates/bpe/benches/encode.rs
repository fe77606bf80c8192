//! Encode throughput on tinyshakespeare: ours single-threaded, batched and parallel, the
//! Hugging Face `tokenizers` crate, and (after criterion) OpenAI's tiktoken measured in the
//! same run by `bench/tiktoken_bench.py`, with the ids checked identical.
//!
//! `cargo bench -p llm-bpe` (the tiktoken peer needs `pip install tiktoken`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use llm_bpe::{Allowed, Tokenizer};

const THREADS: usize = 2;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus() -> String {
    std::fs::read_to_string(root().join("assets/data/tinyshakespeare.txt")).unwrap()
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap()
}

fn bench_encode(c: &mut Criterion) {
    let tok = Tokenizer::gpt2();
    let hf = tokenizers::Tokenizer::from_file(root().join("assets/gpt2/tokenizer.json")).unwrap();
    let text = corpus();
    let docs: Vec<&str> = text.split("\n\n").collect();
    let pool = pool();

    let mut g = c.benchmark_group("encode/tinyshakespeare");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(20);
    g.bench_function("llm-bpe single-thread", |b| {
        b.iter(|| tok.encode_ordinary(&text))
    });
    g.bench_function(format!("llm-bpe batch of docs, {THREADS} threads"), |b| {
        b.iter(|| pool.install(|| tok.encode_batch(&docs, Allowed::AsText).unwrap()))
    });
    g.bench_function(
        format!("llm-bpe one text parallel, {THREADS} threads"),
        |b| b.iter(|| pool.install(|| tok.encode_parallel(&text, Allowed::AsText).unwrap())),
    );
    g.bench_function("tokenizers (HF) single-thread", |b| {
        b.iter(|| hf.encode(text.as_str(), false).unwrap())
    });
    g.finish();
}

/// Median MB/s over `runs` runs after one warm-up, the same method as the Python peer.
fn measure(n_bytes: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut secs: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    n_bytes as f64 / secs[runs / 2] / 1e6
}

/// Runs tiktoken on the same text and prints both side by side with the ratio.
fn compare_with_tiktoken() {
    let text = corpus();
    let tok = Tokenizer::gpt2();
    let docs: Vec<&str> = text.split("\n\n").collect();
    let ids_path =
        std::env::temp_dir().join(format!("llm-bpe-tiktoken-ids-{}.bin", std::process::id()));
    let script = root().join("bench/tiktoken_bench.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(root().join("assets/data/tinyshakespeare.txt"))
        .args([
            "--runs",
            "10",
            "--threads",
            &THREADS.to_string(),
            "--ids-out",
        ])
        .arg(&ids_path)
        .output();
    let peer: serde_json::Value = match output {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).unwrap(),
        Ok(out) => {
            println!(
                "\ntiktoken peer skipped ({}): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            println!("install it with `pip install tiktoken` to compare");
            return;
        }
        Err(e) => {
            println!("\ntiktoken peer skipped: cannot run python3: {e}");
            return;
        }
    };

    let ours = tok.encode_ordinary(&text);
    let theirs: Vec<u32> = std::fs::read(&ids_path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let _ = std::fs::remove_file(&ids_path);
    let identical = ours == theirs;

    let pool = pool();
    let single = measure(text.len(), 10, || {
        std::hint::black_box(tok.encode_ordinary(&text));
    });
    let batch = measure(text.len(), 10, || {
        pool.install(|| std::hint::black_box(tok.encode_batch(&docs, Allowed::AsText).unwrap()));
    });
    let (p_single, p_batch) = (
        peer["single_mb_s"].as_f64().unwrap(),
        peer["batch_mb_s"].as_f64().unwrap(),
    );
    println!(
        "\n== llm-bpe vs {} on tinyshakespeare ({} bytes, {} tokens) ==",
        peer["peer"].as_str().unwrap_or("tiktoken"),
        text.len(),
        ours.len()
    );
    println!(
        "ids identical: {identical} ({} vs {} ids)",
        ours.len(),
        theirs.len()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "", "llm-bpe", "tiktoken", "ratio"
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>7.2}x",
        "single-thread MB/s",
        single,
        p_single,
        single / p_single
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>7.2}x",
        format!("batch of {} docs, {THREADS} threads MB/s", docs.len()),
        batch,
        p_batch,
        batch / p_batch
    );
    assert!(identical, "llm-bpe and tiktoken ids differ");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_encode(&mut c);
    c.final_summary();
    compare_with_tiktoken();
}
