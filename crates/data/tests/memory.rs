//! Streaming many shards keeps memory bounded: with a budget of 16 MB of mapped shards,
//! reading 96 MB of shards (sequentially and at random) grows the peak resident set by about
//! the budget, not the corpus. Alone in its file so that no other test shares the process.

use llm_data::shard::{write_shard, TokenType};
use llm_data::{ShardSet, TokenBatches};

fn rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn resident_memory_stays_within_the_mapping_budget() {
    const SHARD_TOKENS: usize = 8 << 20; // 16 MB of u16 each
    const SHARDS: usize = 6; // 96 MB in all
    const BUDGET: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    {
        let tokens: Vec<u32> = (0..SHARD_TOKENS as u32).map(|i| i % 50_000).collect();
        for s in 0..SHARDS {
            let path = dir.path().join(format!("train_{s:06}.bin"));
            write_shard(&path, &tokens, TokenType::U16).unwrap();
            files.push(path);
        }
    }
    let before = rss_kb();
    let set = ShardSet::from_files(&files, 50257)
        .unwrap()
        .with_max_mapped_bytes(BUDGET);
    let mut seq = TokenBatches::sequential(set, 8, 4096, 0).unwrap();
    // A full pass over every token, sampling the resident set as it goes.
    let mut peak_sequential = 0;
    for i in 0.. {
        seq.next_rows().unwrap();
        assert!(seq.shards().mapped_bytes() <= BUDGET + (SHARD_TOKENS * 2 + 1024));
        if i % 16 == 0 {
            peak_sequential = peak_sequential.max(rss_kb());
        }
        if seq.state().epoch > 0 {
            break;
        }
    }
    let set = ShardSet::from_files(&files, 50257)
        .unwrap()
        .with_max_mapped_bytes(BUDGET);
    let mut random = TokenBatches::random(set, 8, 4096, 1).unwrap();
    let mut peak_random = 0;
    for i in 0..400 {
        random.next_rows().unwrap();
        if i % 16 == 0 {
            peak_random = peak_random.max(rss_kb());
        }
    }
    let grown_mb = |kb: usize| kb.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "peak RSS growth: sequential {:.1} MB, random {:.1} MB (shards 96 MB, budget 16 MB)",
        grown_mb(peak_sequential),
        grown_mb(peak_random)
    );
    // One shard (16 MB) mapped at a time, plus row buffers: well under the 96 MB read.
    assert!(grown_mb(peak_sequential) < 40.0);
    assert!(grown_mb(peak_random) < 40.0);
}
