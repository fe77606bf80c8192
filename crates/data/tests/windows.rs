//! The seed walkthrough's sliding-window examples on `the-verdict.txt`.

mod common;

use burn::data::dataset::Dataset;
use common::*;
use llm_bpe::Tokenizer;
use llm_data::{
    split_tokens, DataLoader, LoaderConfig, NextTokenBatch, NextTokenBatcher, SlidingWindow,
};

fn verdict() -> Vec<u32> {
    let text = std::fs::read_to_string(asset("the-verdict.txt")).unwrap();
    Tokenizer::gpt2().encode(&text).unwrap()
}

#[test]
fn first_pair_with_stride_1() {
    let tokens = verdict();
    let ds = SlidingWindow::new(tokens.clone(), 4, 1).unwrap();
    let mut loader = DataLoader::new(ds, NextTokenBatcher, LoaderConfig::new(1)).unwrap();
    let batch: NextTokenBatch<B> = loader.next_batch(&Default::default());
    assert_eq!(ints(batch.inputs), [40, 367, 2885, 1464]);
    assert_eq!(ints(batch.targets), [367, 2885, 1464, 1807]);
    // The window count is ⌈(len − max_length) / stride⌉, as range(0, len − max_length, stride).
    assert_eq!(tokens.len(), 5145);
    assert_eq!(
        SlidingWindow::new(tokens.clone(), 4, 1).unwrap().len(),
        5141
    );
    assert_eq!(
        SlidingWindow::new(tokens.clone(), 4, 4).unwrap().len(),
        1286
    );
    assert_eq!(
        SlidingWindow::new(tokens, 256, 128).unwrap().len(),
        (5145 - 256usize).div_ceil(128)
    );
}

#[test]
fn second_row_of_the_first_batch_with_stride_4() {
    let ds = SlidingWindow::new(verdict(), 4, 4).unwrap();
    let mut loader = DataLoader::new(ds, NextTokenBatcher, LoaderConfig::new(8)).unwrap();
    let batch: NextTokenBatch<B> = loader.next_batch(&Default::default());
    assert_eq!(batch.inputs.dims(), [8, 4]);
    let rows = ints(batch.inputs);
    // "Row 2" of the walkthrough's printed batch (1-based): windows start every 4 tokens.
    assert_eq!(rows[4..8], [1807, 3619, 402, 271]);
    assert_eq!(rows[..4], [40, 367, 2885, 1464]);
}

#[test]
fn shuffle_is_seeded_and_drop_last_drops() {
    let ds = SlidingWindow::new(verdict(), 4, 4).unwrap(); // 1286 windows
    let config = LoaderConfig {
        batch_size: 100,
        shuffle: true,
        seed: 123,
        drop_last: true,
    };
    let dev = Default::default();
    let epoch = |seed| {
        let mut l = DataLoader::new(
            ds.clone(),
            NextTokenBatcher,
            LoaderConfig { seed, ..config },
        )
        .unwrap();
        l.epoch::<B, NextTokenBatch<B>>(&dev)
            .map(|b| ints(b.inputs))
            .collect::<Vec<_>>()
    };
    let a = epoch(123);
    assert_eq!(
        a.len(),
        12,
        "1286 windows in batches of 100, the last 86 dropped"
    );
    assert_eq!(a, epoch(123));
    assert_ne!(a, epoch(124));
    // Without shuffle the first row is the first window.
    let mut plain = DataLoader::new(ds.clone(), NextTokenBatcher, LoaderConfig::new(100)).unwrap();
    assert_eq!(
        plain.batches_per_epoch(),
        13,
        "the last, smaller batch is kept"
    );
    let first: NextTokenBatch<B> = plain.next_batch(&dev);
    assert_eq!(ints(first.inputs)[..4], [40, 367, 2885, 1464]);
}

#[test]
fn loader_resumes_exactly() {
    let ds = SlidingWindow::new(verdict(), 8, 8).unwrap();
    let config = LoaderConfig {
        batch_size: 16,
        shuffle: true,
        seed: 9,
        drop_last: false,
    };
    let dev = Default::default();
    let mut straight = DataLoader::new(ds.clone(), NextTokenBatcher, config).unwrap();
    let all: Vec<Vec<i64>> = (0..100)
        .map(|_| ints(straight.next_batch::<B, NextTokenBatch<B>>(&dev).inputs))
        .collect();
    let mut first = DataLoader::new(ds.clone(), NextTokenBatcher, config).unwrap();
    for _ in 0..37 {
        first.next_batch::<B, NextTokenBatch<B>>(&dev);
    }
    let saved = serde_json::to_string(&first.state()).unwrap();
    let mut resumed = DataLoader::new(ds, NextTokenBatcher, config).unwrap();
    resumed.restore(serde_json::from_str(&saved).unwrap());
    let rest: Vec<Vec<i64>> = (37..100)
        .map(|_| ints(resumed.next_batch::<B, NextTokenBatch<B>>(&dev).inputs))
        .collect();
    assert_eq!(rest, all[37..]);
}

#[test]
fn train_val_split_and_short_corpora() {
    let tokens = verdict();
    let (train, val) = split_tokens(&tokens, 0.1).unwrap();
    assert_eq!(train.len() + val.len(), tokens.len());
    assert_eq!(train.len(), 4630);
    let err = SlidingWindow::new(val[..4].to_vec(), 4, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 5"), "{err}");
    assert!(SlidingWindow::new(Vec::new(), 4, 1).is_err());
}
