//! What both generation endpoints share: the served model's facts, turning a request's
//! sampling fields into engine requests (checked, with errors naming the field), and
//! gathering each sequence's tokens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_openai::types::chat::{CompletionUsage, StopConfiguration};
use llm_bpe::Tokenizer;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::metrics::Metrics;
use super::scheduler::SeqEvent;
use crate::chat::ChatTemplate;
use crate::{Choice, Event, Finish, Request, SamplingParams};

/// Sequences (prompts × `n`) one request may ask for.
pub const MAX_SEQUENCES: usize = 64;
/// Stop strings one request may give.
pub const MAX_STOP: usize = 16;
/// Alternatives per token (`logprobs`, `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The served model's facts and the server's limits.
pub struct Served {
    /// The name clients ask for (`model`).
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub n_positions: usize,
    pub vocab_size: usize,
    /// `max_tokens` may not exceed this (`--max-tokens`).
    pub max_tokens: usize,
    /// Unix time the server started (models' `created`).
    pub created: u32,
}

impl Served {
    /// Checks that `model` is the one served.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        match model == self.name {
            true => Ok(()),
            false => Err(ApiError::model_not_found(model, &self.name)),
        }
    }

    /// A token as text (bytes that are not UTF-8 become U+FFFD).
    pub fn token_text(&self, id: u32) -> String {
        let bytes = self.tokenizer.token_bytes(id).unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// The bytes of `ids`; ids the tokenizer does not know (a padded vocabulary) add none.
    pub fn bytes(&self, ids: &[u32]) -> Vec<u8> {
        (ids.iter())
            .filter_map(|&id| self.tokenizer.token_bytes(id).ok())
            .flatten()
            .copied()
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.bytes(ids)).into_owned()
    }

    /// Checks a prompt's ids and that it, with `max_tokens` new tokens, fits the context.
    pub fn check_prompt(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        param: &str,
    ) -> Result<(), ApiError> {
        if prompt.is_empty() {
            return Err(ApiError::invalid(param, "the prompt is empty"));
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ApiError::invalid(
                param,
                format!(
                    "token id {id} is outside the model's vocabulary of {}",
                    self.vocab_size
                ),
            ));
        }
        let n = self.n_positions;
        if prompt.len() > n {
            return Err(ApiError::invalid(
                param,
                format!(
                    "the prompt has {} tokens and the model's context holds {n}",
                    prompt.len()
                ),
            ));
        }
        if prompt.len() + max_tokens > n {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt's {} tokens and max_tokens {max_tokens} need {} positions, and the model's context holds {n}",
                    prompt.len(),
                    prompt.len() + max_tokens
                ),
            ));
        }
        Ok(())
    }

    /// Checks `max_tokens` against the server's cap.
    pub fn check_max_tokens(&self, max_tokens: usize, param: &str) -> Result<(), ApiError> {
        match max_tokens > self.max_tokens {
            true => Err(ApiError::invalid(
                param,
                format!(
                    "{max_tokens} is over this server's cap of {} (--max-tokens)",
                    self.max_tokens
                ),
            )),
            false => Ok(()),
        }
    }
}

/// The sampling fields both endpoints take.
#[derive(Default)]
pub struct Knobs {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u8>,
    pub stop: Option<StopConfiguration>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Alternatives per token to return, and the field that asked for them.
    pub top_logprobs: usize,
    pub top_logprobs_param: &'static str,
}

/// A checked request: what to run and how to answer.
pub struct Plan {
    pub prompts: Vec<Vec<u32>>,
    /// Choices per prompt.
    pub n: usize,
    pub params: SamplingParams,
    /// As asked; 0 (with `echo`) scores the prompt only.
    pub max_tokens: usize,
    pub echo: bool,
    /// Return log-probabilities (with this many alternatives).
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Plan {
    /// Checks the sampling fields; `stop` adds to the request's own stop strings.
    pub fn params(
        knobs: &Knobs,
        max_tokens: usize,
        template_stop: Vec<String>,
        served: &Served,
    ) -> Result<(usize, SamplingParams), ApiError> {
        let n = knobs.n.unwrap_or(1) as usize;
        if n == 0 {
            return Err(ApiError::invalid("n", "must be at least 1"));
        }
        let temperature = knobs.temperature.unwrap_or(1.0);
        if temperature > 2.0 {
            return Err(ApiError::invalid(
                "temperature",
                format!("must be in [0, 2], got {temperature}"),
            ));
        }
        let mut stop = match knobs.stop.clone() {
            None => vec![],
            Some(StopConfiguration::String(s)) => vec![s],
            Some(StopConfiguration::StringArray(v)) => v,
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(
                "stop",
                format!("at most {MAX_STOP} stop strings, got {}", stop.len()),
            ));
        }
        stop.extend(template_stop);
        if knobs.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid(
                knobs.top_logprobs_param,
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
            ));
        }
        let params = SamplingParams {
            // Scoring only (max_tokens 0) still runs the prompt: one token, not shown.
            max_new_tokens: max_tokens.max(1),
            temperature,
            top_k: None,
            top_p: knobs.top_p.unwrap_or(1.0),
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: knobs.presence_penalty.unwrap_or(0.0),
            frequency_penalty: knobs.frequency_penalty.unwrap_or(0.0),
            seed: knobs.seed.map_or_else(fresh_seed, |s| s as u64),
            stop_ids: served.tokenizer.eot_id().into_iter().collect(),
            stop,
            top_logprobs: knobs.top_logprobs,
        };
        params.validate().map_err(|e| match e {
            llm_model::ModelError::Param { param, message } => {
                ApiError::invalid(api_name(param), message)
            }
            e => ApiError::invalid("request", e.to_string()),
        })?;
        Ok((n, params))
    }

    /// The engine requests: for each prompt, its `n` choices (seeds `seed`, `seed + 1`, …).
    pub fn sequences(&self) -> Result<Vec<Request>, ApiError> {
        let count = self.count();
        if count > MAX_SEQUENCES {
            return Err(ApiError::invalid(
                "n",
                format!(
                    "prompts × n is {count}; one request may ask for at most {MAX_SEQUENCES} sequences"
                ),
            ));
        }
        let score = self.echo && self.logprobs.is_some();
        Ok((self.prompts.iter())
            .flat_map(|p| (0..self.n).map(move |c| (p, c)))
            .map(|(p, c)| {
                let mut params = self.params.clone();
                params.seed = params.seed.wrapping_add(c as u64);
                Request {
                    prompt: p.clone(),
                    params,
                    truncate_left: false,
                    prompt_logprobs: score,
                }
            })
            .collect())
    }

    /// Sequences: prompts × `n`.
    pub fn count(&self) -> usize {
        self.prompts.len() * self.n
    }

    /// `max_tokens: 0`: the prompt is scored, nothing is generated.
    pub fn scoring_only(&self) -> bool {
        self.max_tokens == 0
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompts.iter().map(Vec::len).sum()
    }

    /// New tokens shown for a sequence that generated `generated` (none when scoring only).
    pub fn shown(&self, generated: usize) -> usize {
        match self.scoring_only() {
            true => 0,
            false => generated,
        }
    }
}

/// The API's name for an engine parameter.
fn api_name(param: &str) -> &str {
    match param {
        "max_new_tokens" => "max_tokens",
        "top_logprobs" => "logprobs",
        p => p,
    }
}

/// A seed for a request that gave none: different each time.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Unix seconds now.
pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Everything one sequence produced.
#[derive(Clone, Debug, Default)]
pub struct SeqOutput {
    /// New tokens with their log-probabilities.
    pub tokens: Vec<Choice>,
    pub text: String,
    pub finish: Option<Finish>,
    /// Prompt tokens 1.. when scored.
    pub prompt_logprobs: Vec<Choice>,
}

impl SeqOutput {
    pub fn push(&mut self, e: Event) {
        if !e.prompt_logprobs.is_empty() {
            self.prompt_logprobs = e.prompt_logprobs;
        }
        self.tokens.push(Choice {
            token: e.token,
            logprob: e.logprob,
            top_logprobs: e.top_logprobs,
        });
        self.text.push_str(&e.text);
        self.finish = e.finish;
    }
}

/// Times a request for the metrics: first token and end.
pub struct Timing {
    start: Instant,
    first_seen: bool,
}

impl Timing {
    pub fn start() -> Self {
        Timing {
            start: Instant::now(),
            first_seen: false,
        }
    }

    pub fn token(&mut self, metrics: &Metrics) {
        if !std::mem::replace(&mut self.first_seen, true) {
            metrics.first_token(self.start.elapsed());
        }
    }

    pub fn finish(&self, metrics: &Metrics, prompt: usize, completion: usize) {
        metrics.finished(self.start.elapsed());
        metrics.tokens(prompt, completion);
    }
}

/// Waits for all `count` sequences of a job to finish.
pub async fn collect(
    events: &mut mpsc::UnboundedReceiver<SeqEvent>,
    count: usize,
    timing: &mut Timing,
    metrics: &Metrics,
) -> Result<Vec<SeqOutput>, ApiError> {
    let mut outputs = vec![SeqOutput::default(); count];
    let mut done = 0;
    while done < count {
        let Some(SeqEvent { seq, result }) = events.recv().await else {
            return Err(ApiError::unavailable("the engine stopped"));
        };
        let event = result.map_err(ApiError::internal)?;
        timing.token(metrics);
        done += usize::from(event.finish.is_some());
        outputs[seq].push(event);
    }
    Ok(outputs)
}

/// Whether a sequence stopped on its own (`stop`) rather than at `max_tokens` (`length`).
pub fn stopped(plan: &Plan, finish: Option<Finish>) -> bool {
    finish == Some(Finish::Stop) && !plan.scoring_only()
}

/// The `usage` object.
pub fn usage(prompt: usize, completion: usize) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: prompt as u32,
        completion_tokens: completion as u32,
        total_tokens: (prompt + completion) as u32,
        ..Default::default()
    }
}
