//! One optimizer step, on one device or data-parallel across several.
//!
//! Data parallelism uses Burn's collective operations (`burn::collective`, Burn's
//! `collective` feature): one model replica and one thread per device (a *peer*). The
//! trainer draws a step's micro-batches in order from its one stream of batches and deals
//! micro-batch `k` to device `k % n`. Each peer runs forward and backward on its share, the
//! gradients are summed across peers with an all-reduce, and every peer applies the same
//! AdamW update to its replica, so the replicas stay identical. Because every loss is
//! divided by the step's total number of micro-batches, n devices compute the same update
//! as one device accumulating all the micro-batches (up to float summation order).

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
use burn::tensor::backend::{Device as _, DeviceId};
use burn::tensor::ElementConversion;
use llm_model::KernelAutodiff;

use crate::error::{Result, TrainError};
use crate::optim::GptOptimizer;
use crate::task::Objective;

/// A replica's share of a step: `(dropout seed, batch)` per micro-batch.
pub(crate) type Work<B, M> = Vec<(u64, <M as Objective<B>>::Batch)>;

/// A model and its optimizer on one device.
pub(crate) struct Replica<B: KernelAutodiff, M: Objective<B>> {
    pub model: M,
    pub optim: GptOptimizer<B, M>,
    pub device: B::Device,
}

/// A step's gradients, before any update: one set per replica (all-reduced, so equal), the
/// mean loss over the step's micro-batches, and the gradients' global norm.
pub(crate) struct StepGradients {
    grads: Vec<GradientsParams>,
    pub loss: f64,
    pub grad_norm: f64,
}

/// Forward and backward over `work`, each loss scaled by `1 / accum`; returns the summed
/// gradients and the sum of the (unscaled) losses.
fn forward_backward<B: KernelAutodiff, M: Objective<B>>(
    model: &M,
    work: Work<B, M>,
    accum: usize,
    device: &B::Device,
) -> (GradientsParams, f64) {
    let single = work.len() == 1 && accum == 1;
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut only = None;
    let mut loss_sum = 0.0;
    for (seed, batch) in work {
        B::seed(device, seed);
        let loss = model.loss(batch); // [1]
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

/// Runs `f(replica, input, rank)` for every replica: in place with one, on a thread per
/// replica (rank = its peer id) with several.
fn on_each<B, M, W, R>(
    replicas: &mut Vec<Replica<B, M>>,
    inputs: Vec<W>,
    f: impl Fn(Replica<B, M>, W, Option<usize>) -> Result<(Replica<B, M>, R)> + Sync,
) -> Result<Vec<R>>
where
    B: KernelAutodiff,
    M: Objective<B>,
    W: Send,
    R: Send,
{
    let peers = std::mem::take(replicas);
    let results: Vec<Result<(Replica<B, M>, R)>> = if peers.len() == 1 {
        peers
            .into_iter()
            .zip(inputs)
            .map(|(rep, w)| f(rep, w, None))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = peers
                .into_iter()
                .zip(inputs)
                .enumerate()
                .map(|(rank, (rep, w))| {
                    let f = &f;
                    s.spawn(move || f(rep, w, Some(rank)))
                })
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
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let (rep, value) = r?;
        replicas.push(rep);
        out.push(value);
    }
    Ok(out)
}

/// The first half of an optimizer step: forward and backward over `work[i]` on
/// `replicas[i]`, and, with several replicas, the all-reduce that sums their gradients.
/// `accum` is the step's total number of micro-batches. Nothing is updated yet, so the
/// caller can judge the loss and the gradient norm first. A non-finite loss still goes
/// through the all-reduce, so no peer waits forever.
pub(crate) fn gradients<B: KernelAutodiff, M: Objective<B>>(
    replicas: &mut Vec<Replica<B, M>>,
    work: Vec<Work<B, M>>,
    accum: usize,
) -> Result<StepGradients> {
    let results = on_each(replicas, work, |rep, w, rank| {
        let (grads, loss_sum) = forward_backward(&rep.model, w, accum, &rep.device);
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
        Ok((rep, (grads, loss_sum)))
    })?;
    let loss = results.iter().map(|(_, l)| l).sum::<f64>() / accum as f64;
    let grads: Vec<GradientsParams> = results.into_iter().map(|(g, _)| g).collect();
    // The same on every replica: the gradients were all-reduced.
    let grad_norm = GptOptimizer::grad_norm(&replicas[0].model, &grads[0]);
    Ok(StepGradients {
        grads,
        loss,
        grad_norm,
    })
}

/// The second half: the same AdamW update on every replica, at learning rate `lr`.
pub(crate) fn apply<B: KernelAutodiff, M: Objective<B>>(
    replicas: &mut Vec<Replica<B, M>>,
    step: StepGradients,
    lr: f64,
) -> Result<()> {
    let norm = step.grad_norm;
    on_each(replicas, step.grads, |mut rep, grads, _| {
        rep.model = rep.optim.apply(lr, rep.model, grads, norm);
        Ok((rep, ()))
    })?;
    Ok(())
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
pub(crate) fn join<B: KernelAutodiff>(devices: &[B::Device]) -> Result<()> {
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
pub(crate) fn leave<B: KernelAutodiff>(n: usize) {
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
