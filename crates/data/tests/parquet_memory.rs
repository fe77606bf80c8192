//! Reading a Parquet file streams: 96 MB of text in one row group reads with the peak
//! resident set growing by a few pages and a few hundred rows, not by the file. Alone in its
//! file so that no other test shares the process.

use llm_common::bench::{reset_peak_rss, rss_mib, Rss};
use llm_data::parquet::{write_documents, ParquetDocuments};

/// Row `i`: 4 KiB of words that do not repeat from row to row.
fn row(i: usize) -> String {
    let mut s = String::with_capacity(4096);
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while s.len() < 4090 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{:x} ", x % 1_000_000));
    }
    s
}

#[test]
fn a_large_row_group_is_read_in_bounded_memory() {
    const ROWS: usize = 24 * 1024; // 96 MiB of text
    const BUDGET_MIB: f64 = 32.0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    let rows: Vec<String> = (0..1024).map(row).collect();
    // 24 passes over 1,024 rows, each row made distinct by its pass number.
    let texts = || (0..ROWS).map(|i| format!("{} {}", i / 1024, rows[i % 1024]));
    write_documents(&path, texts(), usize::MAX).unwrap();
    let text_bytes: usize = texts().map(|t| t.len()).sum();
    assert!(text_bytes > 95 << 20);
    drop(rows);
    // Hand the writer's freed memory back, so that reading cannot hide in it.
    unsafe { libc::malloc_trim(0) };

    assert!(reset_peak_rss());
    let before = rss_mib(Rss::Now);
    let (mut n, mut bytes) = (0, 0);
    for doc in ParquetDocuments::open(&path, "text").unwrap() {
        let doc = doc.unwrap();
        assert!(doc.text.starts_with(&format!("{} ", n / 1024)));
        n += 1;
        bytes += doc.text.len();
    }
    assert_eq!((n, bytes), (ROWS, text_bytes));
    let grew = rss_mib(Rss::Peak) - before;
    assert!(
        grew < BUDGET_MIB,
        "reading {} MB of Parquet grew the peak RSS by {grew:.1} MiB (budget {BUDGET_MIB} MiB)",
        text_bytes >> 20
    );
    eprintln!(
        "peak RSS grew by {grew:.1} MiB reading {} MB",
        text_bytes >> 20
    );
}
