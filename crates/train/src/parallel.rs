//! One optimizer step, on one device or data-parallel across several.
//!
//! Data parallelism uses Burn's collective operations (`burn::collective`, Burn's
//! `collective` feature): one model replica and one thread per device (a *peer*). The
//! trainer draws a step's micro-batches in order from its single sampler and deals
//! micro-batch `k` to device `k % n`. Each peer runs forward and backward on its share, the
//! gradients are summed across peers with an all-reduce, and every peer applies the same
//! AdamW update to its replica, so the replicas stay identical. Because every loss is
//! divided by the step's total number of micro-batches, n devices compute the same update
//! as one device accumulating all the micro-batches (up to float summation order).

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::backend::{Device as _, DeviceId};
use burn::tensor::ElementConversion;
use llm_data::NextTokenBatch;
use llm_model::{cross_entropy, Gpt};

use crate::error::{Result, TrainError};
use crate::optim::GptOptimizer;

/// A replica's share of a step: `(dropout seed, batch)` per micro-batch.
pub(crate) type Work<B> = Vec<(u64, NextTokenBatch<B>)>;

/// A model and its optimizer on one device.
pub(crate) struct Replica<B: AutodiffBackend> {
    pub model: Gpt<B>,
    pub optim: GptOptimizer<B>,
    pub device: B::Device,
}

/// What a step did: the mean loss over its micro-batches, and the gradient norm.
pub(crate) struct StepResult {
    pub loss: f64,
    pub grad_norm: f64,
}

/// Forward and backward over `work`, each loss scaled by `1 / accum`; returns the summed
/// gradients and the sum of the (unscaled) losses.
fn forward_backward<B: AutodiffBackend>(
    model: &Gpt<B>,
    work: Work<B>,
    accum: usize,
    device: &B::Device,
) -> (GradientsParams, f64) {
    let single = work.len() == 1 && accum == 1;
    let mut accumulator = GradientsAccumulator::<Gpt<B>>::new();
    let mut only = None;
    let mut loss_sum = 0.0;
    for (seed, batch) in work {
        B::seed(device, seed);
        let loss = cross_entropy(model.forward(batch.inputs), batch.targets); // [1]
        loss_sum += loss.clone().into_scalar().elem::<f64>();
        if single {
            // One micro-batch: no accumulation copy.
            only = Some(GradientsParams::from_grads(loss.backward(), model));
        } else {
            let grads = (loss / accum as f64).backward();
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        }
    }
    (only.unwrap_or_else(|| accumulator.grads()), loss_sum)
}

impl<B: AutodiffBackend> Replica<B> {
    /// This replica's share of a step; as peer `rank`, the gradients are summed over all
    /// peers before the update. A non-finite loss still goes through the all-reduce (so no
    /// peer waits forever); the caller checks the result.
    fn step(
        mut self,
        work: Work<B>,
        accum: usize,
        lr: f64,
        rank: Option<usize>,
    ) -> Result<(Self, f64, f64)> {
        let (grads, loss_sum) = forward_backward(&self.model, work, accum, &self.device);
        let grads = match rank {
            None => grads,
            Some(rank) => grads
                .all_reduce::<B::InnerBackend>(PeerId::from(rank), ReduceOperation::Sum)
                .map_err(|e| {
                    TrainError::Parallel(format!(
                        "all-reduce of the gradients on peer {rank}: {e:?}"
                    ))
                })?,
        };
        let (model, norm) = self.optim.step(lr, self.model, grads);
        self.model = model;
        Ok((self, loss_sum, norm))
    }
}

/// One optimizer step over `work[i]` on `replicas[i]`; `accum` is the step's total number
/// of micro-batches. With several replicas each runs on its own thread.
pub(crate) fn step<B: AutodiffBackend>(
    replicas: &mut Vec<Replica<B>>,
    work: Vec<Work<B>>,
    accum: usize,
    lr: f64,
) -> Result<StepResult> {
    let n = replicas.len();
    let peers = std::mem::take(replicas);
    let results: Vec<Result<(Replica<B>, f64, f64)>> = if n == 1 {
        peers
            .into_iter()
            .zip(work)
            .map(|(rep, w)| rep.step(w, accum, lr, None))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = peers
                .into_iter()
                .zip(work)
                .enumerate()
                .map(|(rank, (rep, w))| s.spawn(move || rep.step(w, accum, lr, Some(rank))))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(TrainError::Parallel(
                            "a device's training thread panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    let (mut loss_sum, mut grad_norm) = (0.0, 0.0);
    for r in results {
        let (rep, loss, norm) = r?;
        loss_sum += loss;
        grad_norm = norm; // the same on every peer: the gradients were all-reduced
        replicas.push(rep);
    }
    Ok(StepResult {
        loss: loss_sum / accum as f64,
        grad_norm,
    })
}

/// The first `n` devices of the backend that `first` belongs to, from `first` on.
pub fn devices<B: Backend>(first: &B::Device, n: usize) -> Result<Vec<B::Device>> {
    if n <= 1 {
        return Ok(vec![first.clone()]);
    }
    let id = first.to_id();
    let count = B::device_count(id.type_id);
    let last = id.index_id as usize + n;
    if last > count {
        return Err(TrainError::Config(format!(
            "`run.devices` is {n} but {} has {count} device(s) from index {}",
            B::name(first),
            id.index_id
        )));
    }
    Ok((0..n)
        .map(|i| B::Device::from_id(DeviceId::new(id.type_id, id.index_id + i as u16)))
        .collect())
}

/// Registers one peer per device with Burn's local collective server (every peer must
/// register before any all-reduce; registration waits for all of them).
pub(crate) fn join<B: AutodiffBackend>(devices: &[B::Device]) -> Result<()> {
    if devices.len() <= 1 {
        return Ok(());
    }
    collective::reset_collective::<B::InnerBackend>();
    let config = CollectiveConfig::default().with_num_devices(devices.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, device)| {
                let config = config.clone();
                s.spawn(move || {
                    collective::register::<B::InnerBackend>(
                        PeerId::from(rank),
                        device.clone(),
                        config,
                    )
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| TrainError::Parallel("registering a device panicked".into()))?
                .map_err(|e| TrainError::Parallel(format!("registering the devices: {e:?}")))?;
        }
        Ok(())
    })
}

/// Unregisters the peers (at the end of a data-parallel run).
pub(crate) fn leave<B: AutodiffBackend>(n: usize) {
    if n <= 1 {
        return;
    }
    std::thread::scope(|s| {
        for rank in 0..n {
            s.spawn(move || {
                let _ = collective::finish_collective::<B::InnerBackend>(PeerId::from(rank));
            });
        }
    });
}
