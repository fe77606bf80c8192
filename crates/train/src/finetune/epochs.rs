//! The order in which a fine-tuning task visits its training examples: every epoch a fresh
//! seeded shuffle, whole batches only (PyTorch's `shuffle=True, drop_last=True`). The
//! position `(epoch, cursor)` is all a checkpoint needs to continue exactly.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// Where the stream of training batches is, and the stream's shape (which a resume must
/// keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Position {
    pub(super) epoch: usize,
    /// Batches of this epoch already drawn.
    pub(super) cursor: usize,
    pub(super) examples: usize,
    pub(super) batch_size: usize,
}

/// Seeded epochs of batches of example indices.
pub(super) struct Epochs {
    examples: usize,
    batch_size: usize,
    seed: u64,
    order: Vec<usize>,
    position: Position,
}

impl Epochs {
    pub(super) fn new(examples: usize, batch_size: usize, seed: u64) -> Self {
        let mut e = Epochs {
            examples,
            batch_size,
            seed,
            order: Vec::new(),
            position: Position {
                epoch: 0,
                cursor: 0,
                examples,
                batch_size,
            },
        };
        e.order = e.shuffled(0);
        e
    }

    /// Batches in one epoch.
    pub(super) fn batches_per_epoch(&self) -> usize {
        self.examples / self.batch_size
    }

    fn shuffled(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.examples).collect();
        let seed = self.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        order
    }

    /// The next batch's example indices, starting a new epoch when this one has no whole
    /// batch left.
    pub(super) fn next_batch(&mut self) -> &[usize] {
        let bs = self.batch_size;
        if (self.position.cursor + 1) * bs > self.order.len() {
            self.position.epoch += 1;
            self.position.cursor = 0;
            self.order = self.shuffled(self.position.epoch);
        }
        let start = self.position.cursor * bs;
        self.position.cursor += 1;
        &self.order[start..start + bs]
    }

    pub(super) fn position(&self) -> Value {
        serde_json::to_value(self.position).expect("position serialises")
    }

    pub(super) fn restore(&mut self, position: Value) -> Result<()> {
        let p: Position = serde_json::from_value(position)
            .map_err(|e| TrainError::Checkpoint(format!("bad data position: {e}")))?;
        let (was, now) = ((p.examples, p.batch_size), (self.examples, self.batch_size));
        if was != now {
            return Err(TrainError::Resume(format!(
                "the run drew batches of {} from {} training examples; the recipe now makes batches of {} from {}",
                was.1, was.0, now.1, now.0
            )));
        }
        self.order = self.shuffled(p.epoch);
        self.position = p;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_whole_batches_and_resume_exactly() {
        let mut a = Epochs::new(10, 3, 7);
        assert_eq!(a.batches_per_epoch(), 3);
        let first: Vec<Vec<usize>> = (0..3).map(|_| a.next_batch().to_vec()).collect();
        let mut seen: Vec<usize> = first.concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "one epoch visits 9 distinct examples");
        let saved = a.position();
        let next: Vec<Vec<usize>> = (0..4).map(|_| a.next_batch().to_vec()).collect();
        let mut b = Epochs::new(10, 3, 7);
        b.restore(saved).unwrap();
        let again: Vec<Vec<usize>> = (0..4).map(|_| b.next_batch().to_vec()).collect();
        assert_eq!(next, again);
        assert_ne!(first[0], next[0], "a new epoch reshuffles");
        let mut other = Epochs::new(10, 2, 7);
        let e = other.restore(b.position()).unwrap_err().to_string();
        assert!(
            e.contains("batches of 3") && e.contains("batches of 2"),
            "{e}"
        );
    }
}
