//! The engine: a fixed number of batch slots, each holding one sequence, all advanced
//! together one step at a time (continuous batching).
//!
//! - [`Engine::add`] puts a request into a free slot; [`Engine::cancel`] frees one. Both
//!   may happen between any two steps.
//! - [`Engine::step`] runs one forward pass over every active slot: a joining sequence's
//!   whole prompt (prefill), and one token for each running one (decode), packed into one
//!   batch of [`Segment`]s. No padding is needed: each slot has its own positions in the
//!   cache, which is what HF's left padding, attention mask and mask-derived position ids
//!   achieve for a static batch. Logits are computed for each segment's last token only.
//! - A sequence ends on its own: `max_new_tokens`, a stop token, or a stop string.
//! - Past the context, a sequence slides: its slot is refilled from its last
//!   `n_positions / 2` tokens and generation goes on (as `llm_model::generate`). On a
//!   cache built smaller than the context, a request that could outgrow it is refused.

use std::sync::Arc;

use rayon::prelude::*;

use llm_bpe::Tokenizer;
use llm_model::{KernelBackend, Segment};

use crate::cache::{KvDtype, SlotCache};
use crate::error::{InferError, Result};
use crate::model::InferModel;
use crate::text::TextStream;
use llm_model::sampling::{Choice, SamplingParams, TokenSampler};

/// A sequence's handle.
pub type SeqId = u64;

/// One generation request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Keep the last `n_positions` tokens of a longer prompt instead of refusing it.
    pub truncate_left: bool,
    /// Also score the prompt: the first event carries every prompt token's
    /// log-probability after the first ([`Event::prompt_logprobs`]).
    pub prompt_logprobs: bool,
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens`.
    Length,
}

/// One new token of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: SeqId,
    pub token: u32,
    pub logprob: f32,
    pub top_logprobs: Vec<(u32, f32)>,
    /// Text now safe to show (with a tokenizer; whole characters, no stop-string start).
    pub text: String,
    pub finish: Option<Finish>,
    /// On a sequence's first event, if its request asked: prompt tokens 1.. with their
    /// log-probabilities given the tokens before them, and `top_logprobs` alternatives.
    pub prompt_logprobs: Vec<Choice>,
}

/// A finished sequence, from [`Engine::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub prompt: Vec<u32>,
    pub new_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish: Finish,
}

#[derive(Debug)]
struct Sequence {
    id: SeqId,
    /// Prompt and generated tokens.
    tokens: Vec<u32>,
    /// Positions of this slot already in the cache.
    cached: usize,
    /// Tokens the next step feeds.
    pending: Vec<u32>,
    generated: usize,
    /// Score the prompt in the first step.
    score_prompt: bool,
    sampler: TokenSampler,
    text: Option<TextStream>,
}

/// Generation over a batch of slots.
pub struct Engine<B: KernelBackend> {
    model: InferModel<B>,
    tokenizer: Option<Arc<Tokenizer>>,
    cache: SlotCache<B>,
    slots: Vec<Option<Sequence>>,
    next_id: SeqId,
}

impl<B: KernelBackend> Engine<B> {
    /// An engine with `slots` batch slots (at least 1). With a tokenizer, events carry
    /// text and stop strings work.
    pub fn new(
        model: InferModel<B>,
        tokenizer: Option<Arc<Tokenizer>>,
        slots: usize,
        device: &B::Device,
    ) -> Self {
        Self::with_kv(model, tokenizer, slots, KvDtype::F32, device).expect("an f32 cache")
    }

    /// As [`Engine::new`], with the KV cache stored as `kv` (an error if the backend
    /// cannot store it).
    pub fn with_kv(
        model: InferModel<B>,
        tokenizer: Option<Arc<Tokenizer>>,
        slots: usize,
        kv: KvDtype,
        device: &B::Device,
    ) -> Result<Self> {
        let cache = SlotCache::with_dtype(&model.config, slots.max(1), kv, device)?;
        Ok(Self::with_cache(model, tokenizer, cache))
    }

    /// An engine on a cache built by the caller (one slot per sequence; see
    /// [`SlotCache::with_capacity`] for a cache smaller than the context).
    pub fn with_cache(
        model: InferModel<B>,
        tokenizer: Option<Arc<Tokenizer>>,
        cache: SlotCache<B>,
    ) -> Self {
        Engine {
            slots: (0..cache.slots()).map(|_| None).collect(),
            model,
            tokenizer,
            cache,
            next_id: 0,
        }
    }

    pub fn model(&self) -> &InferModel<B> {
        &self.model
    }

    pub fn cache(&self) -> &SlotCache<B> {
        &self.cache
    }

    /// Sequences running.
    pub fn active(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether a request can join now.
    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    /// Checks a request and starts it in a free slot; it runs from the next step.
    pub fn add(&mut self, request: Request) -> Result<SeqId> {
        let Request {
            prompt,
            params,
            truncate_left,
            prompt_logprobs,
        } = request;
        params.validate()?;
        if prompt.is_empty() {
            return Err(InferError::EmptyPrompt);
        }
        let vocab = self.model.vocab_size();
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(InferError::TokenOutOfRange {
                id,
                vocab_size: vocab,
            });
        }
        let n_positions = self.model.n_positions();
        let prompt = match prompt.len() > n_positions {
            true if truncate_left && !prompt_logprobs => {
                prompt[prompt.len() - n_positions..].to_vec()
            }
            true => {
                return Err(InferError::PromptTooLong {
                    len: prompt.len(),
                    n_positions,
                })
            }
            false => prompt,
        };
        let capacity = self.cache.capacity();
        if capacity < n_positions && prompt.len() + params.max_new_tokens > capacity {
            return Err(InferError::Param {
                param: "max_new_tokens",
                message: format!(
                    "{} with a prompt of {} tokens needs {} positions, and this engine's cache holds {capacity} per slot",
                    params.max_new_tokens,
                    prompt.len(),
                    prompt.len() + params.max_new_tokens
                ),
            });
        }
        if !params.stop.is_empty() && self.tokenizer.is_none() {
            return Err(InferError::Param {
                param: "stop",
                message: "needs a tokenizer to read text".into(),
            });
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Err(InferError::Full {
                slots: self.slots.len(),
            });
        };
        let id = self.next_id;
        self.next_id += 1;
        let text = self
            .tokenizer
            .clone()
            .map(|t| TextStream::new(t, params.stop.clone()));
        self.slots[slot] = Some(Sequence {
            id,
            sampler: TokenSampler::new(params, &prompt, vocab),
            pending: prompt.clone(),
            tokens: prompt,
            cached: 0,
            generated: 0,
            score_prompt: prompt_logprobs,
            text,
        });
        Ok(id)
    }

    /// Ends a sequence now and frees its slot; false if it was not running.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        match self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.id == id))
        {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// One forward pass over every running sequence: one new token each.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        let (segments, ids) = self.batch();
        if segments.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows(&segments);
        let flat: Vec<usize> = rows.iter().flat_map(|r| r.clone()).collect();
        let logits = (self.model).forward_rows(&ids, &segments, &mut self.cache, &flat);
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits");
        let vocab = self.model.vocab_size();
        // Each segment's logits, `[rows, vocab]`, in order.
        let mut per_segment = Vec::with_capacity(segments.len());
        let mut at = 0;
        for r in &rows {
            per_segment.push(&logits[at * vocab..(at + r.len()) * vocab]);
            at += r.len();
        }
        // A sequence whose logits overflow ends with an error before any other advances:
        // they run this step again (rewriting the same cache rows).
        let overflow = |l: &&[f32]| l.iter().any(|v| v.is_nan() || *v == f32::INFINITY);
        if let Some(i) = per_segment.iter().position(overflow) {
            let seq = self.slots[segments[i].slot].take().expect("a running slot");
            return Err(InferError::NonFinite { id: seq.id });
        }
        // Sequences choose their tokens in parallel (each has its own seeded sampler, so
        // the answers do not depend on the threads): this is most of a step's time on one
        // core at a large batch.
        let mut work = Vec::with_capacity(segments.len());
        let mut segs = segments.iter().zip(per_segment).peekable();
        for (slot, seq) in self.slots.iter_mut().enumerate() {
            if let Some((seg, rows)) = segs.next_if(|(seg, _)| seg.slot == slot) {
                work.push((seq.as_mut().expect("a running slot"), seg, rows));
            }
        }
        debug_assert!(segs.next().is_none(), "segments in slot order");
        let events: Vec<Result<Event>> = (work.into_par_iter())
            .map(|(seq, seg, rows)| {
                let (before, last) = rows.split_at(rows.len() - vocab);
                let top = seq.sampler.params().top_logprobs;
                let prompt_logprobs = match std::mem::take(&mut seq.score_prompt) {
                    true => score(before, vocab, &seq.tokens[1..], top),
                    false => Vec::new(),
                };
                let mut event = advance(seq, seg, last)?;
                event.prompt_logprobs = prompt_logprobs;
                Ok(event)
            })
            .collect();
        // Finished sequences free their slots (and one that failed does too).
        let mut out = Vec::with_capacity(events.len());
        let mut failed = None;
        for (seg, event) in segments.iter().zip(events) {
            match event {
                Ok(event) if event.finish.is_none() => out.push(event),
                Ok(event) => {
                    self.slots[seg.slot] = None;
                    out.push(event);
                }
                Err(e) => {
                    self.slots[seg.slot] = None;
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// This step's segments and their tokens, one per running sequence; but at most one
    /// prompt is scored per step (all of its rows are kept), so that a step's logits stay
    /// within one context of rows.
    fn batch(&mut self) -> (Vec<Segment>, Vec<u32>) {
        let capacity = self.cache.capacity();
        let mut segments = Vec::new();
        let mut ids = Vec::new();
        let mut scoring = false;
        for (slot, seq) in self.slots.iter_mut().enumerate() {
            let Some(seq) = seq else { continue };
            if seq.score_prompt && std::mem::replace(&mut scoring, true) {
                continue; // joins at the next step
            }
            if seq.cached + seq.pending.len() > capacity {
                // Slide: refill the slot from the last half-context of tokens.
                let keep = (capacity / 2).max(1);
                seq.cached = 0;
                seq.pending = seq.tokens[seq.tokens.len() - keep..].to_vec();
            }
            segments.push(Segment {
                slot,
                pos: seq.cached,
                len: seq.pending.len(),
            });
            ids.extend_from_slice(&seq.pending);
        }
        (segments, ids)
    }

    /// The rows of the step's tokens that go through the LM head, per segment: all of a
    /// prompt being scored, else the last.
    fn rows(&self, segments: &[Segment]) -> Vec<std::ops::Range<usize>> {
        let mut start = 0;
        (segments.iter())
            .map(|seg| {
                let end = start + seg.len;
                let seq = self.slots[seg.slot].as_ref();
                let rows = match seq.is_some_and(|s| s.score_prompt) {
                    true => start..end,
                    false => end - 1..end,
                };
                start = end;
                rows
            })
            .collect()
    }

    /// Runs `requests` to the end, as many at once as there are slots (the rest join as
    /// slots free up), and returns their outputs in order.
    pub fn generate(&mut self, requests: Vec<Request>) -> Result<Vec<Output>> {
        self.generate_with(requests, |_, _| {})
    }

    /// As [`Engine::generate`], calling `on_event(request index, event)` for every new
    /// token as it comes (to stream text).
    pub fn generate_with(
        &mut self,
        requests: Vec<Request>,
        mut on_event: impl FnMut(usize, &Event),
    ) -> Result<Vec<Output>> {
        let mut outputs: Vec<Option<Output>> = vec![None; requests.len()];
        let mut index = std::collections::HashMap::new();
        let mut queue = requests.into_iter().enumerate();
        let mut waiting = queue.next();
        loop {
            while self.has_free_slot() {
                let Some((i, request)) = waiting.take() else {
                    break;
                };
                let prompt = request.prompt.clone();
                let id = self.add(request)?;
                index.insert(id, i);
                outputs[i] = Some(Output {
                    prompt,
                    new_ids: vec![],
                    logprobs: vec![],
                    text: String::new(),
                    finish: Finish::Length,
                });
                waiting = queue.next();
            }
            if self.active() == 0 {
                break;
            }
            for e in self.step()? {
                let i = index[&e.id];
                on_event(i, &e);
                let out = outputs[i].as_mut().expect("started");
                out.new_ids.push(e.token);
                out.logprobs.push(e.logprob);
                out.text.push_str(&e.text);
                if let Some(f) = e.finish {
                    out.finish = f;
                }
            }
        }
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every request ran"))
            .collect())
    }
}

/// Under each of `rows [k, vocab]`, the log-probability of the token after it in `next [≥ k]`.
fn score(rows: &[f32], vocab: usize, next: &[u32], top: usize) -> Vec<Choice> {
    (rows.chunks_exact(vocab).zip(next))
        .map(|(row, &token)| Choice::scored(row, token, top))
        .collect()
}

/// Chooses a sequence's next token from its logits and updates it.
fn advance(seq: &mut Sequence, seg: &Segment, logits: &[f32]) -> Result<Event> {
    let choice = seq.sampler.choose(logits);
    seq.cached = seg.pos + seg.len;
    seq.tokens.push(choice.token);
    seq.pending = vec![choice.token];
    seq.generated += 1;
    let params = seq.sampler.params();
    let stop_token = params.stop_ids.contains(&choice.token);
    let mut finish = None;
    let mut text = String::new();
    if stop_token {
        finish = Some(Finish::Stop);
    } else if let Some(stream) = seq.text.as_mut() {
        let piece = stream.push(choice.token)?;
        text = piece.text;
        if piece.stopped {
            finish = Some(Finish::Stop);
        }
    }
    if finish.is_none() && seq.generated >= params.max_new_tokens {
        finish = Some(Finish::Length);
    }
    if finish.is_some() {
        if let Some(stream) = seq.text.take() {
            if finish == Some(Finish::Length) || stop_token {
                text.push_str(&stream.finish());
            }
        }
    }
    Ok(Event {
        id: seq.id,
        token: choice.token,
        logprob: choice.logprob,
        top_logprobs: choice.top_logprobs,
        text,
        finish,
        prompt_logprobs: Vec::new(),
    })
}
