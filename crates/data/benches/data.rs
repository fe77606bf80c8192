//! `prepare` throughput (MB/s and tokens/s) on tinyshakespeare + moby-dick with 1 and 2
//! threads, and batch assembly time for 8×1024 from memory-mapped shards (target ≤ 1 ms).
//!
//! `cargo bench -p llm-data`

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Flex;
use criterion::{BenchmarkId, Criterion, Throughput};
use llm_bpe::Tokenizer;
use llm_data::{prepare, PrepareConfig, ShardSet, TokenBatches};

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/data")
        .join(name)
}

fn main() {
    let inputs = vec![asset("tinyshakespeare.txt"), asset("moby-dick.txt")];
    let bytes: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let tok = Tokenizer::gpt2();
    let dir = tempfile::tempdir().unwrap();
    let config = PrepareConfig {
        shard_tokens: 200_000,
        ..PrepareConfig::default()
    };
    let mut c = Criterion::default().configure_from_args();

    let mut g = c.benchmark_group("prepare/shakespeare+moby-dick");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    let mut tokens_per_s = Vec::new();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join(format!("t{threads}"));
        let run =
            || pool.install(|| prepare(&inputs, &out, &tok, "gpt2", &config, &|_, _| {}).unwrap());
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(run)
        });
        // Median over 5 runs for the summary table.
        let mut secs: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let r = run();
                std::hint::black_box(r.tokens);
                t.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        let tokens = run().tokens;
        tokens_per_s.push((
            threads,
            bytes as f64 / secs[2] / 1e6,
            tokens as f64 / secs[2],
        ));
    }
    g.finish();

    let shards = dir.path().join("t1");
    let device = Default::default();
    let mut g = c.benchmark_group("batch-8x1024");
    g.bench_function("random windows, tensors", |b| {
        let mut tb =
            TokenBatches::random(ShardSet::open(&shards, "train").unwrap(), 8, 1024, 0).unwrap();
        b.iter(|| tb.next_batch::<Flex>(&device).unwrap())
    });
    g.bench_function("sequential, tensors", |b| {
        let mut tb =
            TokenBatches::sequential(ShardSet::open(&shards, "train").unwrap(), 8, 1024, 0)
                .unwrap();
        b.iter(|| tb.next_batch::<Flex>(&device).unwrap())
    });
    g.finish();
    c.final_summary();

    let mut tb =
        TokenBatches::random(ShardSet::open(&shards, "train").unwrap(), 8, 1024, 0).unwrap();
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(tb.next_batch::<Flex>(&device).unwrap());
    }
    let per_batch_us = t.elapsed().as_secs_f64() / n as f64 * 1e6;

    println!(
        "\n== prepare: tinyshakespeare + moby-dick ({:.2} MB) ==",
        bytes as f64 / 1e6
    );
    for (threads, mb_s, tok_s) in tokens_per_s {
        println!(
            "{threads} thread(s): {mb_s:>6.1} MB/s  {:>6.2} M tokens/s",
            tok_s / 1e6
        );
    }
    println!("batch assembly 8×1024 (random windows, mmap → Flex tensors): {per_batch_us:.1} µs (target ≤ 1000 µs)");
}
