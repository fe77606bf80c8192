//! `POST /v1/completions`: text completion, with `echo` + `logprobs` scoring (the way
//! lm-evaluation-harness measures log-likelihood).

use std::sync::Arc;

use async_openai::types::chat::{
    Choice, CompletionFinishReason, CompletionUsage, Logprobs, Prompt,
};
use async_openai::types::completions::{CreateCompletionRequest, CreateCompletionResponse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llm_bpe::Allowed;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::plan::{self, stopped, usage, Knobs, Plan, SeqOutput, Served};
use super::sse::Chunks;
use super::AppState;
use crate::{Event, Finish};

/// Tokens a completion generates when `max_tokens` is not given (OpenAI's default).
const DEFAULT_MAX_TOKENS: u32 = 16;

pub async fn handle(
    state: Arc<AppState>,
    req: CreateCompletionRequest,
) -> Result<Response, ApiError> {
    state.served.check_model(&req.model)?;
    let plan = plan_of(&req, &state.served)?;
    state
        .respond(plan, "cmpl", CompletionChunks::new, whole)
        .await
}

/// The whole answer, `text_completion`.
fn whole(
    state: &AppState,
    plan: &Plan,
    id: String,
    outputs: Vec<SeqOutput>,
    usage: CompletionUsage,
) -> Response {
    let choices = (outputs.into_iter().enumerate())
        .map(|(i, out)| choice(&state.served, plan, i, out))
        .collect();
    Json(CreateCompletionResponse {
        id,
        object: "text_completion".into(),
        created: plan::now(),
        model: state.served.name.clone(),
        choices,
        usage: Some(usage),
        system_fingerprint: None,
    })
    .into_response()
}

/// Checks the request and decides what to run.
fn plan_of(req: &CreateCompletionRequest, served: &Served) -> Result<Plan, ApiError> {
    if req.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid("best_of", "is not supported"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "is not supported"));
    }
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid("logit_bias", "is not supported"));
    }
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) as usize;
    served.check_max_tokens(max_tokens, "max_tokens")?;
    let prompts = prompts(&req.prompt, served)?;
    for p in &prompts {
        served.check_prompt(p, max_tokens, "prompt")?;
    }
    let logprobs = req.logprobs.map(usize::from);
    let knobs = Knobs {
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: req.stop.clone(),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        top_logprobs: logprobs.unwrap_or(0),
        top_logprobs_param: "logprobs",
    };
    let (n, params) = Plan::params(&knobs, max_tokens, vec![], served)?;
    Ok(Plan {
        prompts,
        n,
        params,
        max_tokens,
        echo: req.echo.unwrap_or(false),
        logprobs,
        stream: req.stream.unwrap_or(false),
        include_usage: (req.stream_options.as_ref()).is_some_and(|o| o.include_usage == Some(true)),
    })
}

/// A string, a list of strings, a list of token ids, or a list of lists of token ids.
/// Special-token text such as `<|endoftext|>` in a string is that token.
fn prompts(prompt: &Prompt, served: &Served) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |text: &str| {
        (served.tokenizer.encode_with(text, Allowed::All))
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))
    };
    let prompts = match prompt {
        Prompt::String(s) => vec![encode(s)?],
        Prompt::StringArray(v) => v.iter().map(|s| encode(s)).collect::<Result<_, _>>()?,
        Prompt::IntegerArray(ids) => vec![ids.clone()],
        Prompt::ArrayOfIntegerArray(v) => v.clone(),
    };
    match prompts.is_empty() {
        true => Err(ApiError::invalid("prompt", "give at least one prompt")),
        false => Ok(prompts),
    }
}

/// Choice `index` (prompt `index / n`) of a finished request.
fn choice(served: &Served, plan: &Plan, index: usize, out: SeqOutput) -> Choice {
    let prompt = &plan.prompts[index / plan.n];
    let new = &out.tokens[..plan.shown(out.tokens.len())];
    let mut text = match plan.echo {
        true => served.decode(prompt),
        false => String::new(),
    };
    if !plan.scoring_only() {
        text.push_str(&out.text);
    }
    let mut offsets = Offsets::default();
    let logprobs = plan.logprobs.map(|_| {
        let mut lp = Logprobs::default();
        if plan.echo {
            offsets.prompt(served, &mut lp, prompt, &out.prompt_logprobs);
        }
        offsets.tokens(served, &mut lp, new);
        lp
    });
    Choice {
        text,
        index: index as u32,
        logprobs,
        finish_reason: Some(reason(plan, out.finish)),
    }
}

fn reason(plan: &Plan, finish: Option<Finish>) -> CompletionFinishReason {
    match stopped(plan, finish) {
        true => CompletionFinishReason::Stop,
        false => CompletionFinishReason::Length,
    }
}

/// Writes tokens into the API's `logprobs` object, with each token's offset in the
/// choice's text: the characters that the bytes before it decode to.
#[derive(Default)]
struct Offsets {
    bytes: Vec<u8>,
}

impl Offsets {
    fn push(
        &mut self,
        served: &Served,
        lp: &mut Logprobs,
        token: u32,
        scored: Option<&crate::Choice>,
    ) {
        lp.text_offset
            .push(String::from_utf8_lossy(&self.bytes).chars().count() as u32);
        self.bytes.extend(served.bytes(&[token]));
        lp.tokens.push(served.token_text(token));
        lp.token_logprobs.push(scored.map(|c| c.logprob));
        lp.top_logprobs.push(match scored {
            Some(c) => top(served, &c.top_logprobs),
            None => Value::Null,
        });
    }

    /// The prompt's tokens: the first has no log-probability (null).
    fn prompt(
        &mut self,
        served: &Served,
        lp: &mut Logprobs,
        prompt: &[u32],
        scored: &[crate::Choice],
    ) {
        self.push(served, lp, prompt[0], None);
        for c in scored {
            self.push(served, lp, c.token, Some(c));
        }
    }

    fn tokens(&mut self, served: &Served, lp: &mut Logprobs, new: &[crate::Choice]) {
        for c in new {
            self.push(served, lp, c.token, Some(c));
        }
    }
}

/// `{token text: logprob}` of the alternatives.
fn top(served: &Served, alternatives: &[(u32, f32)]) -> Value {
    let map: Map<String, Value> = (alternatives.iter())
        .map(|&(id, lp)| (served.token_text(id), f32_value(lp)))
        .collect();
    Value::Object(map)
}

/// An f32 as JSON, written as serde writes an `f32` field (`-5.875503`, not the wider
/// `-5.875503063201904`), so that a token's `top_logprobs` entry and its `token_logprobs`
/// entry read back as the same number (lm-evaluation-harness compares them).
fn f32_value(x: f32) -> Value {
    let shortest: f64 = x.to_string().parse().unwrap_or(f64::NAN);
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

/// Streaming: one `text_completion` chunk per token.
struct CompletionChunks {
    state: Arc<AppState>,
    plan: Plan,
    id: String,
    created: u32,
    timing: plan::Timing,
    /// Per sequence: its offsets, and whether its first chunk has gone.
    offsets: Vec<Option<Offsets>>,
    completion: usize,
}

impl CompletionChunks {
    fn new(state: Arc<AppState>, plan: Plan, id: String, timing: plan::Timing) -> Self {
        let count = plan.count();
        CompletionChunks {
            state,
            plan,
            id,
            created: plan::now(),
            timing,
            offsets: (0..count).map(|_| None).collect(),
            completion: 0,
        }
    }

    fn chunk(&self, choices: Vec<Choice>, usage: Option<CompletionUsage>) -> String {
        let c = CreateCompletionResponse {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.state.served.name.clone(),
            choices,
            usage,
            system_fingerprint: None,
        };
        serde_json::to_string(&c).unwrap_or_default()
    }
}

impl Chunks for CompletionChunks {
    fn opening(&mut self) -> Vec<String> {
        vec![]
    }

    fn event(&mut self, seq: usize, event: Event) -> Vec<String> {
        self.timing.token(&self.state.metrics);
        let served = &self.state.served;
        let plan = &self.plan;
        let first = self.offsets[seq].is_none();
        let offsets = self.offsets[seq].get_or_insert_with(Offsets::default);
        let mut lp = Logprobs::default();
        let mut text = String::new();
        if first && plan.echo {
            let prompt = &plan.prompts[seq / plan.n];
            text.push_str(&served.decode(prompt));
            if plan.logprobs.is_some() {
                offsets.prompt(served, &mut lp, prompt, &event.prompt_logprobs);
            }
        }
        if !plan.scoring_only() {
            self.completion += 1;
            text.push_str(&event.text);
            let chosen = crate::Choice {
                token: event.token,
                logprob: event.logprob,
                top_logprobs: event.top_logprobs,
            };
            offsets.tokens(served, &mut lp, std::slice::from_ref(&chosen));
        }
        let choice = Choice {
            text,
            index: seq as u32,
            logprobs: plan.logprobs.map(|_| lp),
            finish_reason: event.finish.map(|f| reason(plan, Some(f))),
        };
        vec![self.chunk(vec![choice], None)]
    }

    fn closing(&mut self) -> Vec<String> {
        let prompt = self.plan.prompt_tokens();
        self.timing
            .finish(&self.state.metrics, prompt, self.completion);
        match self.plan.include_usage {
            true => vec![self.chunk(vec![], Some(usage(prompt, self.completion)))],
            false => vec![],
        }
    }
}
