//! Server-sent events: a job's tokens as API chunks, as they come, then `data: [DONE]`.
//!
//! The stream owns the job's event receiver: when the client goes, axum drops the stream,
//! the receiver closes, and the engine frees the job's slots before its next step.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::scheduler::SeqEvent;
use crate::Event;

/// How an endpoint writes its chunks, each as JSON text.
pub trait Chunks: Send + 'static {
    /// Before any token (chat's role deltas).
    fn opening(&mut self) -> Vec<String>;
    /// For one new token of sequence `seq`.
    fn event(&mut self, seq: usize, event: Event) -> Vec<String>;
    /// After every sequence has finished (the usage chunk).
    fn closing(&mut self) -> Vec<String>;
}

struct State<C> {
    events: mpsc::UnboundedReceiver<SeqEvent>,
    chunks: C,
    pending: VecDeque<SseEvent>,
    /// Sequences not finished yet.
    remaining: usize,
    ended: bool,
}

impl<C: Chunks> State<C> {
    fn queue(&mut self, chunks: Vec<String>) {
        for c in chunks {
            self.pending.push_back(SseEvent::default().data(c));
        }
    }

    /// An error object as the stream's last event (the `openai` client raises it).
    fn fail(&mut self, error: ApiError) {
        let body = serde_json::to_string(&error.body()).unwrap_or_default();
        self.queue(vec![body]);
        self.end();
    }

    fn end(&mut self) {
        self.pending.push_back(SseEvent::default().data("[DONE]"));
        self.ended = true;
    }

    /// Waits for the next event and turns it into chunks.
    async fn advance(&mut self) {
        if self.remaining == 0 {
            let closing = self.chunks.closing();
            self.queue(closing);
            return self.end();
        }
        match self.events.recv().await {
            Some(SeqEvent {
                seq,
                result: Ok(event),
            }) => {
                self.remaining -= usize::from(event.finish.is_some());
                let chunks = self.chunks.event(seq, event);
                self.queue(chunks);
            }
            Some(SeqEvent {
                result: Err(message),
                ..
            }) => self.fail(ApiError::internal(message)),
            None => self.fail(ApiError::unavailable("the engine stopped")),
        }
    }
}

/// The response streaming `count` sequences' chunks.
pub fn stream(
    events: mpsc::UnboundedReceiver<SeqEvent>,
    count: usize,
    mut chunks: impl Chunks,
) -> Response {
    let opening = chunks.opening();
    let mut state = State {
        events,
        chunks,
        pending: VecDeque::new(),
        remaining: count,
        ended: false,
    };
    state.queue(opening);
    let body = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(e) = state.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), state));
            }
            if state.ended {
                return None;
            }
            state.advance().await;
        }
    });
    // Comment lines while a request waits in the queue keep proxies from timing out.
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}
