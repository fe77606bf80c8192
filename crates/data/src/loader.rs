//! Batching a [`Dataset`] into Burn tensors: a seeded shuffle per epoch, `drop_last`, and a
//! position that can be saved and restored.

use std::marker::PhantomData;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Where a [`DataLoader`] is: the epoch and the next item of that epoch's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    pub cursor: usize,
}

/// Settings of a [`DataLoader`].
#[derive(Clone, Copy, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the items at every epoch (with `seed` and the epoch number).
    pub shuffle: bool,
    pub seed: u64,
    /// Drop the last, smaller batch of an epoch.
    pub drop_last: bool,
}

impl LoaderConfig {
    pub fn new(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
        }
    }
}

/// Iterates over a dataset of `I` items in batches, epoch after epoch. Each epoch's order
/// depends only on `(seed, epoch)`, so [`LoaderState`] (two numbers) is enough to resume
/// exactly.
pub struct DataLoader<I, D, Bt> {
    dataset: D,
    batcher: Bt,
    config: LoaderConfig,
    state: LoaderState,
    order: Vec<usize>,
    _item: PhantomData<fn() -> I>,
}

impl<I, D: Dataset<I>, Bt> DataLoader<I, D, Bt> {
    pub fn new(dataset: D, batcher: Bt, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Invalid("batch_size must be positive".into()));
        }
        if dataset.is_empty() || (config.drop_last && dataset.len() < config.batch_size) {
            return Err(DataError::TooSmall(format!(
                "a dataset of {} items gives no batch of {}",
                dataset.len(),
                config.batch_size
            )));
        }
        let mut loader = DataLoader {
            dataset,
            batcher,
            config,
            state: LoaderState::default(),
            order: Vec::new(),
            _item: PhantomData,
        };
        loader.order = loader.epoch_order(0);
        Ok(loader)
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            let seed = self.config.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// The position, to save with a checkpoint.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Moves to a saved position.
    pub fn restore(&mut self, state: LoaderState) {
        self.order = self.epoch_order(state.epoch);
        self.state = state;
    }

    /// Starts the next epoch if no (full, with `drop_last`) batch is left in this one.
    fn roll_over_if_done(&mut self) {
        let remaining = self.order.len() - self.state.cursor;
        if remaining == 0 || (self.config.drop_last && remaining < self.config.batch_size) {
            self.state = LoaderState {
                epoch: self.state.epoch + 1,
                cursor: 0,
            };
            self.order = self.epoch_order(self.state.epoch);
        }
    }

    /// The next batch's item indices, moving to the next epoch when this one is done.
    pub fn next_indices(&mut self) -> Vec<usize> {
        self.roll_over_if_done();
        let start = self.state.cursor;
        let end = (start + self.config.batch_size).min(self.order.len());
        self.state.cursor = end;
        self.order[start..end].to_vec()
    }

    /// The next batch as tensors.
    pub fn next_batch<B, O>(&mut self, device: &B::Device) -> O
    where
        B: Backend,
        Bt: Batcher<B, I, O>,
    {
        let items = self
            .next_indices()
            .into_iter()
            .map(|i| self.dataset.get(i).expect("indices are below len"))
            .collect();
        self.batcher.batch(items, device)
    }

    /// One whole epoch from the current position, as tensors.
    pub fn epoch<'a, B, O>(&'a mut self, device: &'a B::Device) -> impl Iterator<Item = O> + 'a
    where
        B: Backend,
        Bt: Batcher<B, I, O>,
    {
        self.roll_over_if_done();
        let total = self.batches_per_epoch();
        let done = self.state.cursor.div_ceil(self.config.batch_size);
        (done..total).map(move |_| self.next_batch::<B, O>(device))
    }

    pub fn dataset(&self) -> &D {
        &self.dataset
    }
}
