//! `prepare` and the shard readers: counts, repeatability, sampling, resume and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use llm_bpe::Tokenizer;
use llm_data::shard::{encode_shard, Shard, TokenType};
use llm_data::{prepare, BatchState, DataError, Manifest, PrepareConfig, ShardSet, TokenBatches};

fn run_prepare(
    inputs: &[PathBuf],
    out: &Path,
    config: &PrepareConfig,
) -> llm_data::Result<llm_data::PrepareReport> {
    prepare(inputs, out, &Tokenizer::gpt2(), "gpt2", config, &|_, _| {})
}

fn small_shards() -> PrepareConfig {
    PrepareConfig {
        shard_tokens: 100_000,
        ..PrepareConfig::default()
    }
}

#[test]
fn one_book_is_cut_into_train_and_val() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_prepare(&[asset("tinyshakespeare.txt")], dir.path(), &small_shards()).unwrap();
    let m = &report.manifest;
    assert_eq!(m.split_method, "within-documents");
    assert_eq!(m.documents, 1);
    assert_eq!((m.train.tokens, m.val.tokens), (304_222, 33_803));
    assert_eq!(m.train.shards.len(), 4);
    assert_eq!(
        m.train.shards.iter().map(|s| s.tokens).sum::<usize>(),
        304_222
    );
    assert_eq!(m.token_type, TokenType::U16);
    assert_eq!(Manifest::load(dir.path()).unwrap(), *m);
    // The shards hold exactly the tokenizer's ids, in order.
    let all = Tokenizer::gpt2()
        .encode(&std::fs::read_to_string(asset("tinyshakespeare.txt")).unwrap())
        .unwrap();
    let first = Shard::open(&dir.path().join("train_000000.bin")).unwrap();
    assert_eq!(first.to_vec(50257).unwrap(), all[..100_000]);
    let val = Shard::open(&dir.path().join("val_000000.bin")).unwrap();
    assert_eq!(val.to_vec(50257).unwrap(), all[304_222..]);
}

#[test]
fn two_books_and_end_of_text_between_documents() {
    let dir = tempfile::tempdir().unwrap();
    let m = run_prepare(
        &[asset("tinyshakespeare.txt"), asset("moby-dick.txt")],
        dir.path(),
        &PrepareConfig::default(),
    )
    .unwrap()
    .manifest;
    // Each book is cut 90/10; one <|endoftext|> separates the two parts in each split.
    assert_eq!(
        m.train.tokens,
        304_222 + 1 + (317_756f64 * 0.9).floor() as usize
    );
    assert_eq!(m.train.tokens + m.val.tokens, 338_025 + 317_756 + 2);
    let train = Shard::open(&dir.path().join("train_000000.bin"))
        .unwrap()
        .to_vec(50257)
        .unwrap();
    assert_eq!(train[304_222], 50256);
    assert_eq!(train.iter().filter(|&&t| t == 50256).count(), 1);
}

#[test]
fn many_documents_are_split_whole_and_the_output_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let sotu = asset("state-of-the-union.jsonl.gz");
    let m = run_prepare(
        std::slice::from_ref(&sotu),
        &a,
        &PrepareConfig {
            shard_tokens: 500_000,
            ..PrepareConfig::default()
        },
    )
    .unwrap()
    .manifest;
    assert_eq!(m.split_method, "documents");
    assert_eq!(m.documents, 233);
    // 2,074,068 tokens of speeches plus one separator between consecutive documents of a split.
    let (nt, nv) = (m.train.tokens, m.val.tokens);
    assert!(nv > 100_000 && nv < 400_000, "val {nv}");
    assert!(
        nt + nv > 2_074_068 && nt + nv < 2_074_068 + 233,
        "{nt} + {nv}"
    );
    // A second run, on 1 thread instead of all, gives byte-identical files.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        run_prepare(
            &[sotu],
            &b,
            &PrepareConfig {
                shard_tokens: 500_000,
                ..PrepareConfig::default()
            },
        )
    })
    .unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(files.len() > 3);
    for f in files {
        assert_eq!(
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
            "{f:?}"
        );
    }
}

#[test]
fn random_and_sequential_batches_resume_and_skip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    run_prepare(&[asset("tinyshakespeare.txt")], dir.path(), &small_shards()).unwrap();
    for make in [TokenBatches::random, TokenBatches::sequential] {
        let batches = |n: usize| {
            let mut tb = make(ShardSet::open(dir.path(), "train").unwrap(), 4, 64, 7).unwrap();
            (0..n).map(|_| tb.next_rows().unwrap()).collect::<Vec<_>>()
        };
        let straight = batches(40);
        assert_eq!(straight, batches(40), "same seed, same batches");
        for (inputs, targets) in &straight {
            for row in 0..4 {
                let (x, y) = (
                    &inputs[row * 64..(row + 1) * 64],
                    &targets[row * 64..(row + 1) * 64],
                );
                assert_eq!(x[1..], y[..63], "targets are inputs shifted by one");
            }
        }
        let mut tb = make(ShardSet::open(dir.path(), "train").unwrap(), 4, 64, 7).unwrap();
        for _ in 0..17 {
            tb.next_rows().unwrap();
        }
        let saved = serde_json::to_string(tb.state()).unwrap();
        drop(tb);
        let state: BatchState = serde_json::from_str(&saved).unwrap();
        let mut resumed =
            TokenBatches::restore(ShardSet::open(dir.path(), "train").unwrap(), state).unwrap();
        let rest: Vec<_> = (17..40).map(|_| resumed.next_rows().unwrap()).collect();
        assert_eq!(rest, straight[17..]);
        // A node that skips the other node's batches reads exactly its own share.
        let mut tb = make(ShardSet::open(dir.path(), "train").unwrap(), 4, 64, 7).unwrap();
        let mut mine = Vec::new();
        for _ in 0..20 {
            tb.skip_batch();
            mine.push(tb.next_rows().unwrap());
        }
        let odd: Vec<_> = straight.iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(mine, odd, "skipping moves the stream on as reading does");
    }
}

#[test]
fn sequential_rows_walk_the_stream_and_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    run_prepare(
        &[asset("the-verdict.txt")],
        out,
        &PrepareConfig {
            shard_tokens: 1000,
            val_fraction: 0.0,
            ..PrepareConfig::default()
        },
    )
    .unwrap();
    let all: Vec<u32> = Tokenizer::gpt2()
        .encode(&std::fs::read_to_string(asset("the-verdict.txt")).unwrap())
        .unwrap();
    let mut tb =
        TokenBatches::sequential(ShardSet::open(out, "train").unwrap(), 2, 100, 0).unwrap();
    let (x, _) = tb.next_rows().unwrap();
    assert_eq!(x[..100], all[..100]);
    assert_eq!(x[100..], all[100..200]);
    // Rows never cross a shard boundary; after the last shard comes the first again.
    for _ in 0..200 {
        tb.next_rows().unwrap();
    }
    assert!(tb.state().epoch >= 1);
    let batch = tb.next_batch::<B>(&Default::default()).unwrap();
    assert_eq!(batch.inputs.dims(), [2, 100]);
}

#[test]
fn bad_corpora_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");

    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"hello caf\xe9").unwrap();
    let err = run_prepare(&[latin1], &out, &PrepareConfig::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::NotUtf8 { offset: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("latin1.txt"));

    let jsonl = d.join("bad.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n{not json}\n",
    )
    .unwrap();
    let err = run_prepare(
        std::slice::from_ref(&jsonl),
        &out,
        &PrepareConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.jsonl") && err.contains("line 4") && err.contains("not valid JSON"),
        "{err}"
    );

    std::fs::write(&jsonl, "{\"text\": \"one\"}\n{\"body\": \"two\"}\n").unwrap();
    let err = run_prepare(
        std::slice::from_ref(&jsonl),
        &out,
        &PrepareConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("\"text\""), "{err}");
    // The field name is configurable.
    let ok = PrepareConfig {
        text_field: "body".into(),
        ..PrepareConfig::default()
    };
    std::fs::write(&jsonl, "{\"body\": \"two words\"}\n").unwrap();
    run_prepare(&[jsonl], &out, &ok).unwrap();

    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = run_prepare(&[empty], &out, &PrepareConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let err = run_prepare(&[d.join("notes.md")], &out, &PrepareConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("notes.md"), "{err}");
}

#[test]
fn damaged_shards_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = encode_shard(&[1, 2, 3, 4, 5, 6], TokenType::U16);

    let cut = d.join("cut.bin");
    std::fs::write(&cut, &good[..good.len() - 3]).unwrap();
    let err = Shard::open(&cut).map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("cut.bin") && err.contains("truncated"),
        "{err}"
    );

    let magic = d.join("magic.bin");
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&magic, &bad).unwrap();
    let err = Shard::open(&magic).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("magic.bin") && err.contains("magic"), "{err}");

    let version = d.join("version.bin");
    let mut bad = good.clone();
    bad[4] = 9;
    std::fs::write(&version, &bad).unwrap();
    let err = Shard::open(&version).map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("version.bin") && err.contains("version 9"),
        "{err}"
    );

    let tiny = d.join("tiny.bin");
    std::fs::write(&tiny, b"short").unwrap();
    assert!(Shard::open(&tiny)
        .map(|_| ())
        .unwrap_err()
        .to_string()
        .contains("tiny.bin"));

    // Ids beyond the vocabulary are caught when read.
    let range = d.join("range.bin");
    std::fs::write(&range, encode_shard(&[1, 2, 60_000, 4], TokenType::U16)).unwrap();
    let set = ShardSet::from_files(&[range], 50257).unwrap();
    let mut tb = TokenBatches::sequential(set, 1, 3, 0).unwrap();
    let err = tb.next_rows().unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TokenOutOfRange {
                id: 60_000,
                position: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("range.bin"));

    // Too little data for one row of seq_len + 1 tokens.
    let short = d.join("short.bin");
    std::fs::write(&short, encode_shard(&[1, 2, 3], TokenType::U16)).unwrap();
    let err = TokenBatches::random(ShardSet::from_files(&[short], 50257).unwrap(), 1, 8, 0)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("seq_len 8"), "{err}");

    // A manifest that promises more than a shard holds.
    let prepared = d.join("prepared");
    run_prepare(
        &[asset("the-verdict.txt")],
        &prepared,
        &PrepareConfig::default(),
    )
    .unwrap();
    let shard = prepared.join("train_000000.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    let err = ShardSet::open(&prepared, "train")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train_000000.bin"), "{err}");
}

#[test]
fn u32_shards_for_large_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.bin");
    std::fs::write(&path, encode_shard(&[70_000, 1, 100_000], TokenType::U32)).unwrap();
    let s = Shard::open(&path).unwrap();
    assert_eq!(s.token_type(), TokenType::U32);
    assert_eq!(s.to_vec(128_000).unwrap(), [70_000, 1, 100_000]);
    assert_eq!(TokenType::for_vocab(50257), TokenType::U16);
    assert_eq!(TokenType::for_vocab(128_256), TokenType::U32);
}
