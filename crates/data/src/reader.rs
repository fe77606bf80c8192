//! Reading prepared shards: memory-mapped, streaming across any number of shards with
//! bounded memory, and resumable.
//!
//! Two batch orders give `[batch, seq]` inputs and next-token targets:
//! - **random windows**, like nanoGPT's `get_batch`: each row starts at a random position of
//!   a random shard (weighted by its size);
//! - **sequential**, like llm.c's loader: rows are consecutive chunks, shard after shard,
//!   wrapping around at the end (one pass = one epoch).
//!
//! Memory is bounded by construction: at most `max_mapped_bytes` of shards are mapped at
//! once (least recently used ones are unmapped), so the resident set is at most that much
//! shard data whatever the corpus size. The reader's [`BatchState`] (shard, offset,
//! epoch, RNG) serialises with serde: a run resumed from a checkpoint gets exactly the
//! batches it would have got.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batcher::NextTokenBatch;
use crate::error::{DataError, Result};
use crate::prepare::Manifest;
use crate::shard::Shard;

/// Default bound on mapped shard bytes.
pub const DEFAULT_MAX_MAPPED_BYTES: usize = 1 << 30;

/// The shards of one split, mapped on demand under a memory budget.
pub struct ShardSet {
    dir: PathBuf,
    files: Vec<(PathBuf, usize)>,
    vocab_size: usize,
    max_mapped_bytes: usize,
    /// Open shards, most recently used last.
    open: Vec<(usize, Shard)>,
}

impl ShardSet {
    /// The shards of `split` (`train` or `val`) of a prepared dataset directory. Checks that
    /// the files exist with the sizes the manifest gives.
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let entry = manifest.split(split)?;
        let width = manifest.token_type.bytes() as u64;
        let mut files = Vec::new();
        for s in &entry.shards {
            let path = dir.join(&s.file);
            let len = std::fs::metadata(&path)
                .map_err(|e| DataError::io(&path, e))?
                .len();
            let expected = crate::shard::HEADER_BYTES as u64 + s.tokens as u64 * width;
            if len != expected {
                return Err(DataError::file(
                    &path,
                    format!("the manifest says {} tokens ({expected} bytes) but the file has {len} bytes (truncated?)", s.tokens),
                ));
            }
            files.push((path, s.tokens));
        }
        Ok(ShardSet {
            dir: dir.into(),
            files,
            vocab_size: manifest.tokenizer.vocab_size,
            max_mapped_bytes: DEFAULT_MAX_MAPPED_BYTES,
            open: Vec::new(),
        })
    }

    /// Shards given directly, without a manifest.
    pub fn from_files(files: &[PathBuf], vocab_size: usize) -> Result<Self> {
        let mut out = Vec::new();
        for f in files {
            let shard = Shard::open(f)?;
            out.push((f.clone(), shard.len()));
        }
        Ok(ShardSet {
            dir: files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            files: out,
            vocab_size,
            max_mapped_bytes: DEFAULT_MAX_MAPPED_BYTES,
            open: Vec::new(),
        })
    }

    /// Sets the bound on mapped bytes (at least one shard is always mapped).
    pub fn with_max_mapped_bytes(mut self, bytes: usize) -> Self {
        self.max_mapped_bytes = bytes;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn num_shards(&self) -> usize {
        self.files.len()
    }

    /// Tokens in each shard.
    pub fn shard_lens(&self) -> Vec<usize> {
        self.files.iter().map(|(_, n)| *n).collect()
    }

    pub fn total_tokens(&self) -> usize {
        self.files.iter().map(|(_, n)| n).sum()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Bytes currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.open.iter().map(|(_, s)| s.mapped_bytes()).sum()
    }

    fn shard(&mut self, index: usize) -> Result<&Shard> {
        if let Some(pos) = self.open.iter().position(|(i, _)| *i == index) {
            let entry = self.open.remove(pos);
            self.open.push(entry);
        } else {
            let (path, expected) = &self.files[index];
            let shard = Shard::open(path)?;
            if shard.len() != *expected {
                return Err(DataError::file(
                    path,
                    format!(
                        "holds {} tokens but the manifest says {expected}",
                        shard.len()
                    ),
                ));
            }
            let incoming = shard.mapped_bytes();
            while !self.open.is_empty() && self.mapped_bytes() + incoming > self.max_mapped_bytes {
                self.open.remove(0); // unmaps the least recently used shard
            }
            self.open.push((index, shard));
        }
        Ok(&self.open.last().expect("just pushed").1)
    }

    /// Appends `n` tokens of shard `index` from `start` to `out`, checking the ids.
    pub fn read(&mut self, index: usize, start: usize, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let vocab = self.vocab_size;
        self.shard(index)?.read_into(start, n, vocab, out)
    }
}

/// How rows are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchOrder {
    Random,
    Sequential,
}

/// Everything needed to resume a [`TokenBatches`] exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    /// `sampling` in checkpoints written before the rename.
    #[serde(alias = "sampling")]
    pub order: BatchOrder,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Sequential: the shard and token offset of the next row.
    pub shard: usize,
    pub offset: usize,
    /// Completed passes over the data (sequential).
    pub epoch: u64,
    pub rng: ChaCha8Rng,
}

/// Batches of `[batch_size, seq_len]` next-token pairs from a [`ShardSet`].
pub struct TokenBatches {
    set: ShardSet,
    state: BatchState,
    /// Tokens per shard.
    lens: Vec<usize>,
    /// Per shard, the number of valid row starts (random sampling), cumulated.
    starts_cumsum: Vec<u64>,
}

impl TokenBatches {
    /// Random windows (nanoGPT's `get_batch`), seeded.
    pub fn random(set: ShardSet, batch_size: usize, seq_len: usize, seed: u64) -> Result<Self> {
        Self::new(set, BatchOrder::Random, batch_size, seq_len, seed)
    }

    /// Consecutive rows through every shard in order, wrapping around.
    pub fn sequential(set: ShardSet, batch_size: usize, seq_len: usize, seed: u64) -> Result<Self> {
        Self::new(set, BatchOrder::Sequential, batch_size, seq_len, seed)
    }

    fn new(
        set: ShardSet,
        order: BatchOrder,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<Self> {
        let state = BatchState {
            order,
            batch_size,
            seq_len,
            shard: 0,
            offset: 0,
            epoch: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        Self::restore(set, state)
    }

    /// Resumes from a saved state.
    pub fn restore(set: ShardSet, state: BatchState) -> Result<Self> {
        if state.batch_size == 0 || state.seq_len == 0 {
            return Err(DataError::Invalid(
                "batch_size and seq_len must be positive".into(),
            ));
        }
        let need = state.seq_len + 1;
        let mut starts_cumsum = Vec::with_capacity(set.num_shards());
        let mut total = 0u64;
        for n in set.shard_lens() {
            total += (n + 1).saturating_sub(need) as u64;
            starts_cumsum.push(total);
        }
        if total == 0 {
            return Err(DataError::TooSmall(format!(
                "the shards in {} hold no run of {need} tokens (seq_len {} + 1): {} tokens in {} shard(s)",
                set.dir().display(),
                state.seq_len,
                set.total_tokens(),
                set.num_shards()
            )));
        }
        if state.shard >= set.num_shards() {
            return Err(DataError::Invalid(format!(
                "the saved state points at shard {} but there are {}",
                state.shard,
                set.num_shards()
            )));
        }
        Ok(TokenBatches {
            lens: set.shard_lens(),
            set,
            state,
            starts_cumsum,
        })
    }

    /// The state to save with a checkpoint.
    pub fn state(&self) -> &BatchState {
        &self.state
    }

    pub fn shards(&self) -> &ShardSet {
        &self.set
    }

    /// The next batch as flat row-major `(inputs, targets)`, `batch_size × seq_len` each.
    pub fn next_rows(&mut self) -> Result<(Vec<u32>, Vec<u32>)> {
        let (b, t) = (self.state.batch_size, self.state.seq_len);
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut row = Vec::with_capacity(t + 1);
        for _ in 0..b {
            row.clear();
            let (shard, start) = self.next_row_start();
            self.set.read(shard, start, t + 1, &mut row)?;
            inputs.extend_from_slice(&row[..t]);
            targets.extend_from_slice(&row[1..]);
        }
        Ok((inputs, targets))
    }

    /// Moves past the next batch without reading it (another process trains on it); the
    /// stream goes on exactly as if it had been read.
    pub fn skip_batch(&mut self) {
        for _ in 0..self.state.batch_size {
            self.next_row_start();
        }
    }

    /// The next batch as tensors.
    pub fn next_batch<B: Backend>(&mut self, device: &B::Device) -> Result<NextTokenBatch<B>> {
        let (inputs, targets) = self.next_rows()?;
        Ok(NextTokenBatch::from_flat(
            &inputs,
            &targets,
            self.state.batch_size,
            self.state.seq_len,
            device,
        ))
    }

    fn next_row_start(&mut self) -> (usize, usize) {
        let t = self.state.seq_len;
        match self.state.order {
            BatchOrder::Random => {
                let total = *self.starts_cumsum.last().expect("at least one shard");
                let r = self.state.rng.random_range(0..total);
                let shard = self.starts_cumsum.partition_point(|&c| c <= r);
                let before = if shard == 0 {
                    0
                } else {
                    self.starts_cumsum[shard - 1]
                };
                (shard, (r - before) as usize)
            }
            BatchOrder::Sequential => {
                let lens = &self.lens;
                // Skip to a shard with room for a whole row, wrapping at the end.
                while self.state.offset + t + 1 > lens[self.state.shard] {
                    self.state.offset = 0;
                    self.state.shard += 1;
                    if self.state.shard == lens.len() {
                        self.state.shard = 0;
                        self.state.epoch += 1;
                    }
                }
                let start = (self.state.shard, self.state.offset);
                self.state.offset += t;
                start
            }
        }
    }
}
