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
//!
//! Several processes (nodes, [`Cluster`]) join through Burn's global collective: node 0
//! hosts the coordinator, every peer of every node takes part in each all-reduce, and the
//! micro-batches are dealt over all the run's devices, node by node. Every exchange waits
//! at most `Cluster::timeout` for the other nodes.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
use burn::tensor::backend::{Device as _, DeviceId};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};
use llm_model::{KernelAutodiff, KernelBackend};

use crate::cluster::Cluster;
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

/// Runs `f(replica, input, local)` for every replica: in place with one device and no
/// collective, else on a thread per replica (`local` = its index on this node).
fn on_each<B, M, W, R>(
    replicas: &mut Vec<Replica<B, M>>,
    collective: &Collective,
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
    let results: Vec<Result<(Replica<B, M>, R)>> = if !collective.is_active() {
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
                .map(|(local, (rep, w))| {
                    let f = &f;
                    s.spawn(move || f(rep, w, Some(local)))
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
/// `replicas[i]`, and, with a collective, the all-reduce that sums the gradients and the
/// losses of every peer of every node. `accum` is the step's total number of micro-batches,
/// over all nodes. Nothing is updated yet, so the caller can judge the loss and the
/// gradient norm first. A non-finite loss still goes through the all-reduce, so no peer
/// waits for it.
pub(crate) fn gradients<B: KernelAutodiff, M: Objective<B>>(
    replicas: &mut Vec<Replica<B, M>>,
    collective: &Collective,
    work: Vec<Work<B, M>>,
    accum: usize,
) -> Result<StepGradients> {
    let results = on_each(replicas, collective, work, |rep, w, local| {
        let (grads, loss_sum) = forward_backward(&rep.model, w, accum, &rep.device);
        let summed = match local {
            None => (grads, loss_sum),
            Some(local) => collective.sum::<B>(local, grads, loss_sum, &rep.device)?,
        };
        Ok((rep, summed))
    })?;
    // Every peer holds the same sums after an all-reduce: take the first's loss.
    let loss = results[0].1 / accum as f64;
    let grads: Vec<GradientsParams> = results.into_iter().map(|(g, _)| g).collect();
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
    collective: &Collective,
    step: StepGradients,
    lr: f64,
) -> Result<()> {
    let norm = step.grad_norm;
    on_each(replicas, collective, step.grads, |mut rep, grads, _| {
        rep.model = rep.optim.apply(lr, rep.model, grads, norm);
        Ok((rep, ()))
    })?;
    Ok(())
}

/// The first `n` devices of the backend that `first` belongs to, from `first` on. A CPU
/// backend has one device: its `n` peers share it (and its cores).
pub fn devices<B: KernelBackend>(first: &B::Device, n: usize) -> Result<Vec<B::Device>> {
    if n <= 1 {
        return Ok(vec![first.clone()]);
    }
    let id = first.to_id();
    let count = B::device_count(id.type_id);
    if B::ON_CPU && count == 1 {
        return Ok(vec![first.clone(); n]);
    }
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

/// This process's part in Burn's collective: its peers (one per local device), where they
/// sit among all the run's devices, and how long to wait for the others.
pub(crate) struct Collective {
    /// Devices on this node.
    local: usize,
    /// Devices in the whole run.
    world: usize,
    /// The run-wide index of this node's first device.
    first: usize,
    multi_node: bool,
    timeout: Duration,
}

impl Collective {
    /// Joins the run's collective with one peer per device (waiting for every peer of every
    /// node; node 0 first starts the coordinator). One device on one node joins nothing.
    pub(crate) fn join<B: KernelAutodiff>(
        devices: &[B::Device],
        cluster: &Cluster,
    ) -> Result<Self> {
        let local = devices.len();
        let c = Collective {
            local,
            world: local * cluster.nodes,
            first: local * cluster.rank,
            multi_node: cluster.is_multi_node(),
            timeout: cluster.timeout,
        };
        if !c.is_active() {
            return Ok(c);
        }
        collective::reset_collective::<B::InnerBackend>();
        let mut config = CollectiveConfig::default().with_num_devices(local);
        if c.multi_node {
            report_collective_panics();
            config = global_config(config, cluster)?;
        }
        let joins: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, device)| {
                let (peer, device, config) = (c.peer(i), device.clone(), config.clone());
                spawn(move || collective::register::<B::InnerBackend>(peer, device, config))
            })
            .collect();
        for join in joins {
            c.wait("joining the run", join)?
                .map_err(|e| TrainError::Parallel(format!("joining the run: {e:?}")))?;
        }
        Ok(c)
    }

    /// Whether gradients go through an all-reduce.
    pub(crate) fn is_active(&self) -> bool {
        self.world > 1
    }

    /// Devices in the whole run.
    pub(crate) fn world(&self) -> usize {
        self.world
    }

    /// The local index of run-wide device `d`, if it is on this node.
    pub(crate) fn local_index(&self, d: usize) -> Option<usize> {
        (self.first..self.first + self.local)
            .contains(&d)
            .then(|| d - self.first)
    }

    fn peer(&self, local: usize) -> PeerId {
        PeerId::from(self.first + local)
    }

    /// Sums `grads` and `loss_sum` over every peer of the run.
    fn sum<B: KernelAutodiff>(
        &self,
        local: usize,
        grads: GradientsParams,
        loss_sum: f64,
        device: &B::Device,
    ) -> Result<(GradientsParams, f64)> {
        let peer = self.peer(local);
        // Burn's ring all-reduce cuts a tensor into one slice per node: pad the loss.
        let mut padded = vec![0.0f32; self.world];
        padded[0] = loss_sum as f32;
        let loss = Tensor::<B::InnerBackend, 1>::from_floats(padded.as_slice(), device)
            .into_primitive()
            .tensor();
        let summed = spawn(move || {
            let grads = grads.all_reduce::<B::InnerBackend>(peer, ReduceOperation::Sum)?;
            let loss = collective::all_reduce::<B::InnerBackend>(peer, loss, ReduceOperation::Sum)?;
            Ok::<_, collective::CollectiveError>((grads, loss))
        });
        let what = format!("summing the gradients on peer {peer}");
        let (grads, loss) = self.wait(&what, summed)?.map_err(|e| {
            TrainError::Parallel(match self.multi_node {
                true => format!("{what}: {e:?}; a node may have stopped or died"),
                false => format!("{what}: {e:?}"),
            })
        })?;
        let loss = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(loss));
        let loss_sum = loss.into_data().iter::<f64>().next().unwrap_or(f64::NAN);
        Ok((grads, loss_sum))
    }

    /// What `pending` sends, waiting at most `self.timeout` for it: the other peers may be
    /// gone, or the collective's thread may have died.
    fn wait<T>(&self, what: &str, pending: Receiver<T>) -> Result<T> {
        pending.recv_timeout(self.timeout).map_err(|e| {
            TrainError::Parallel(match e {
                RecvTimeoutError::Timeout => format!(
                    "{what}: no answer from the other peers within {} s; a node may have stopped or died, or cannot reach this one (check --coordinator, --node-address and that their ports are open)",
                    self.timeout.as_secs()
                ),
                RecvTimeoutError::Disconnected => format!(
                    "{what}: Burn's collective failed (see the error above); a node may have stopped or died"
                ),
            })
        })
    }

    /// Leaves the collective (at the end of the run, or after an error), waiting at most a
    /// few seconds: a node whose peers are gone must still exit.
    pub(crate) fn leave<B: KernelAutodiff>(&self) {
        if !self.is_active() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..self.local {
            let (peer, tx) = (self.peer(i), tx.clone());
            std::thread::spawn(move || {
                let _ = collective::finish_collective::<B::InnerBackend>(peer);
                let _ = tx.send(());
            });
        }
        for _ in 0..self.local {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(5)) {
                tracing::warn!("leaving the collective: no answer within 5 s");
                return;
            }
        }
    }
}

/// Makes a panic inside Burn's collective (its threads panic when a node's connection
/// drops) an error line instead of a panic report; the exchange that waited on it then
/// fails with its own error. Other panics are reported as before.
fn report_collective_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            if !file.contains("burn-collective") && !file.contains("burn-communication") {
                return previous(info);
            }
            let message = (info.payload().downcast_ref::<&str>().copied())
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!("Burn's collective: {message}");
        }));
    });
}

/// `module` with its parameter ids numbered 1, 2, … in module order.
pub(crate) fn number_param_ids<B: Backend, M: Module<B>>(module: M) -> M {
    struct Numbering(u64);
    impl<B: Backend> ModuleMapper<B> for Numbering {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            self.0 += 1;
            let (_, tensor, mapper) = param.consume();
            Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
        }
    }
    module.map(&mut Numbering(0))
}

/// Runs `f` on a thread of its own; its result arrives on the returned channel. A call
/// into the collective can block forever, so the caller waits on the channel, with a
/// timeout, instead of joining the thread.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// `config` joined to the other nodes through the coordinator (which node 0 starts here).
fn global_config(config: CollectiveConfig, cluster: &Cluster) -> Result<CollectiveConfig> {
    let (coordinator, node) = (cluster.coordinator()?, cluster.node()?);
    if cluster.is_lead() {
        start_coordinator(coordinator.port)?;
    }
    let address = |s: String| {
        s.parse::<burn_communication::Address>()
            .expect("infallible")
    };
    Ok(config
        .with_num_nodes(cluster.nodes as u32)
        .with_global_address(address(coordinator.ws()))
        .with_node_address(address(node.ws()))
        .with_data_service_port(node.port))
}

/// Starts Burn's global orchestrator on `port` (all interfaces), on a thread of its own.
/// It stops on SIGINT or SIGTERM, and so does this process, as it would without it.
fn start_coordinator(port: u16) -> Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        TrainError::Parallel(format!(
            "the coordinator cannot listen on port {port} (--coordinator): {e}"
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Parallel(format!("starting the coordinator: {e}")))?;
    std::thread::spawn(move || {
        runtime.block_on(burn_collective::start_global_orchestrator(port));
        eprintln!("the coordinator stopped (Ctrl-C): exiting now; resume from the last checkpoint");
        std::process::exit(130);
    });
    Ok(())
}
