//! `prepare` throughput (MB/s and tokens/s) on tinyshakespeare + moby-dick with 1 and 2
//! threads; the same text (the State of the Union speeches) read from Parquet against
//! JSON lines; and batch assembly time for 8×1024 from memory-mapped shards (target ≤ 1 ms).
//!
//! `cargo bench -p llm-data`

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Flex;
use criterion::{BenchmarkId, Criterion, Throughput};
use llm_bpe::Tokenizer;
use llm_common::bench::{median_secs, reset_peak_rss, rss_mib, Rss};
use llm_data::parquet::write_documents;
use llm_data::text::documents;
use llm_data::{prepare, PrepareConfig, ShardSet, TokenBatches};

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/data")
        .join(name)
}

/// The State of the Union speeches as `.jsonl` and as `.parquet` (snappy, 32 rows per row
/// group), then `prepare` on each with 1 and 2 threads: MB/s of text, medians of 5 runs.
fn parquet_against_jsonl(dir: &std::path::Path, tok: &Tokenizer, config: &PrepareConfig) {
    let texts: Vec<String> = documents(&[asset("state-of-the-union.jsonl.gz")], "text")
        .map(|d| d.unwrap().text)
        .collect();
    let text_mb = texts.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    let jsonl = dir.join("sotu.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let parquet = dir.join("sotu.parquet");
    write_documents(&parquet, &texts, 32).unwrap();

    println!("\n== prepare: the same {text_mb:.2} MB of text (233 speeches) from JSON lines and Parquet ==");
    let mut line = "reading alone (no tokenizing):".to_string();
    for input in [&jsonl, &parquet] {
        let files = [input.clone()];
        let secs = median_secs(5, || {
            std::hint::black_box(
                documents(&files, "text")
                    .map(|d| d.unwrap().text.len())
                    .sum::<usize>(),
            );
        });
        let name = input.extension().unwrap().to_string_lossy().into_owned();
        line += &format!("  {name} {:>6.0} MB/s", text_mb / secs);
    }
    println!("{line}");
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut line = format!("{threads} thread(s):");
        for input in [&jsonl, &parquet] {
            let out = dir.join("sotu-shards");
            let inputs = [input.clone()];
            let secs = median_secs(5, || {
                pool.install(|| prepare(&inputs, &out, tok, "gpt2", config, &|_, _| {}).unwrap());
            });
            let name = input.extension().unwrap().to_string_lossy().into_owned();
            line += &format!("  {name} {:>6.1} MB/s", text_mb / secs);
        }
        println!("{line}");
    }
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

    parquet_against_jsonl(dir.path(), &tok, &config);
    large_parquet_peak_rss(dir.path(), &tok);
}

/// `prepare` on a Parquet file larger than its memory budget (1.1 GB of text: the speeches
/// 100 times over, each pass numbered), 2 threads, 10M-token shards: the peak resident set
/// grows by the batch and the shard buffers, not by the file.
fn large_parquet_peak_rss(dir: &std::path::Path, tok: &Tokenizer) {
    const PASSES: usize = 100;
    const BUDGET_MB: u64 = 256;
    let texts: Vec<String> = documents(&[asset("state-of-the-union.jsonl.gz")], "text")
        .map(|d| d.unwrap().text)
        .collect();
    let big = dir.join("big.parquet");
    let rows = || (0..PASSES).flat_map(|p| texts.iter().map(move |t| format!("{p} {t}")));
    write_documents(&big, rows(), 1024).unwrap();
    let text_mb = rows().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let file_mb = std::fs::metadata(&big).unwrap().len() as f64 / 1e6;
    let config = PrepareConfig {
        shard_tokens: 10_000_000,
        ..PrepareConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    assert!(reset_peak_rss(), "cannot reset the peak RSS here");
    let before = rss_mib(Rss::Now);
    let t = Instant::now();
    let inputs = [big.clone()];
    let out = dir.join("big-shards");
    let report = pool.install(|| prepare(&inputs, &out, tok, "gpt2", &config, &|_, _| {}).unwrap());
    let secs = t.elapsed().as_secs_f64();
    let grew_mb = (rss_mib(Rss::Peak) - before).max(0.0).round() as u64;
    println!(
        "\n== prepare: one {file_mb:.0} MB Parquet file ({text_mb:.0} MB of text, {} M tokens), 2 threads ==",
        report.tokens / 1_000_000
    );
    println!(
        "{:.1} MB/s of text; peak RSS grew by {grew_mb} MB (budget {BUDGET_MB} MB: {})",
        text_mb / secs,
        if grew_mb <= BUDGET_MB {
            "within"
        } else {
            "OVER"
        }
    );
}
