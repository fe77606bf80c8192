//! The engine's thread: takes jobs from a bounded queue into free batch slots, steps the
//! engine, and sends each sequence's tokens back to the request that asked for them.
//!
//! A job whose client has gone (its event receiver dropped) is cancelled before the next
//! step, so a disconnect frees its slots at once. When every sender of the queue is
//! dropped (the HTTP server has drained), the loop finishes what it holds and returns.

use std::collections::{HashMap, VecDeque};

use tokio::sync::mpsc;

use super::metrics::Metrics;
use crate::{Engine, Event, InferError, Request, SeqId};
use llm_model::KernelBackend;

/// One request's sequences (prompts × `n`), run as slots free up.
pub struct Job {
    pub sequences: Vec<Request>,
    pub events: mpsc::UnboundedSender<SeqEvent>,
}

/// A new token of sequence `seq` of a job, or why it failed.
pub struct SeqEvent {
    pub seq: usize,
    pub result: Result<Event, String>,
}

/// The HTTP side's handle on the queue.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Job>,
}

/// The queue is full.
pub struct Full;

impl Queue {
    /// Queues a job, or refuses it at once when `capacity` jobs are waiting.
    pub fn submit(&self, job: Job) -> Result<(), Full> {
        self.tx.try_send(job).map_err(|_| Full)
    }

    /// Jobs waiting for a slot.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// A queue of at most `capacity` waiting jobs, and its receiving end for [`run`].
pub fn queue(capacity: usize) -> (Queue, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Queue { tx }, rx)
}

/// Where a sequence's events go.
struct Route {
    events: mpsc::UnboundedSender<SeqEvent>,
    seq: usize,
}

/// A sequence of a taken job, waiting for a slot.
struct Waiting {
    route: Route,
    request: Request,
}

/// Runs the engine until the queue's senders are all dropped and its work is done.
pub fn run<B: KernelBackend>(
    engine: &mut Engine<B>,
    mut jobs: mpsc::Receiver<Job>,
    metrics: &Metrics,
) {
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut routes: HashMap<SeqId, Route> = HashMap::new();
    loop {
        metrics.cancelled(drop_abandoned(engine, &mut routes));
        admit(engine, &mut jobs, &mut waiting, &mut routes);
        metrics.set_running(engine.active());
        if engine.active() == 0 {
            match jobs.blocking_recv() {
                Some(job) => take(job, &mut waiting),
                None => return,
            }
            continue;
        }
        match engine.step() {
            Ok(events) => deliver(events, &mut routes),
            Err(e) => fail(engine, e, &mut routes),
        }
    }
}

/// Cancels the sequences whose client has gone; returns how many.
fn drop_abandoned<B: KernelBackend>(
    engine: &mut Engine<B>,
    routes: &mut HashMap<SeqId, Route>,
) -> usize {
    let before = routes.len();
    routes.retain(|&id, route| {
        let gone = route.events.is_closed();
        if gone {
            engine.cancel(id);
        }
        !gone
    });
    before - routes.len()
}

/// Fills free slots: from the taken job first, then from the queue.
fn admit<B: KernelBackend>(
    engine: &mut Engine<B>,
    jobs: &mut mpsc::Receiver<Job>,
    waiting: &mut VecDeque<Waiting>,
    routes: &mut HashMap<SeqId, Route>,
) {
    while engine.has_free_slot() {
        if waiting.is_empty() {
            match jobs.try_recv() {
                Ok(job) => take(job, waiting),
                Err(_) => return,
            }
        }
        let Some(Waiting { route, request }) = waiting.pop_front() else {
            return;
        };
        if route.events.is_closed() {
            continue;
        }
        match engine.add(request) {
            Ok(id) => {
                routes.insert(id, route);
            }
            Err(e) => send(&route, Err(e.to_string())),
        }
    }
}

/// A job's sequences, in order, unless its client has gone already.
fn take(job: Job, waiting: &mut VecDeque<Waiting>) {
    if job.events.is_closed() {
        return;
    }
    for (seq, request) in job.sequences.into_iter().enumerate() {
        let route = Route {
            events: job.events.clone(),
            seq,
        };
        waiting.push_back(Waiting { route, request });
    }
}

fn deliver(events: Vec<Event>, routes: &mut HashMap<SeqId, Route>) {
    for event in events {
        let id = event.id;
        let done = event.finish.is_some();
        if let Some(route) = routes.get(&id) {
            send(route, Ok(event));
        }
        if done {
            routes.remove(&id);
        }
    }
}

/// A failed step: the sequence at fault (or, if unknown, every running one) gets the error.
fn fail<B: KernelBackend>(
    engine: &mut Engine<B>,
    error: InferError,
    routes: &mut HashMap<SeqId, Route>,
) {
    tracing::error!("generation step failed: {error}");
    let at_fault: Vec<SeqId> = match error {
        InferError::NonFinite { id } => vec![id],
        _ => routes.keys().copied().collect(),
    };
    for id in at_fault {
        engine.cancel(id);
        if let Some(route) = routes.remove(&id) {
            send(&route, Err(error.to_string()));
        }
    }
}

fn send(route: &Route, result: Result<Event, String>) {
    // A closed receiver is a client that left: nothing to do.
    let _ = route.events.send(SeqEvent {
        seq: route.seq,
        result,
    });
}
