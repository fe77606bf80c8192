//! `POST /v1/chat/completions`: the conversation through the model's chat template
//! ([`crate::chat`]), answered whole or streamed as `chat.completion.chunk`s.

use std::sync::Arc;

use async_openai::types::chat::{
    ChatChoice, ChatChoiceLogprobs, ChatChoiceStream,
    ChatCompletionRequestAssistantMessageContent as AssistantContent,
    ChatCompletionRequestAssistantMessageContentPart as AssistantPart,
    ChatCompletionRequestDeveloperMessageContent as DeveloperContent,
    ChatCompletionRequestDeveloperMessageContentPart as DeveloperPart,
    ChatCompletionRequestMessage as RequestMessage,
    ChatCompletionRequestSystemMessageContent as SystemContent,
    ChatCompletionRequestSystemMessageContentPart as SystemPart,
    ChatCompletionRequestUserMessageContent as UserContent,
    ChatCompletionRequestUserMessageContentPart as UserPart, ChatCompletionResponseMessage,
    ChatCompletionStreamResponseDelta, ChatCompletionTokenLogprob, CompletionUsage,
    CreateChatCompletionRequest, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
    FinishReason, Role as ApiRole, TopLogprobs,
};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llm_bpe::Allowed;

use super::error::ApiError;
use super::plan::{self, stopped, usage, Knobs, Plan, SeqOutput, Served};
use super::sse::Chunks;
use super::AppState;
use crate::chat::{Message, Role};
use crate::{Event, Finish};

pub async fn handle(
    state: Arc<AppState>,
    req: CreateChatCompletionRequest,
) -> Result<Response, ApiError> {
    state.served.check_model(&req.model)?;
    let plan = plan_of(&req, &state.served)?;
    state
        .respond(plan, "chatcmpl", ChatChunks::new, whole)
        .await
}

/// The whole answer, `chat.completion`.
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
    Json(CreateChatCompletionResponse {
        id,
        object: "chat.completion".into(),
        created: plan::now(),
        model: state.served.name.clone(),
        choices,
        usage: Some(usage),
        ..Default::default()
    })
    .into_response()
}

#[allow(deprecated)] // `max_tokens` and `seed`: older clients still send them.
fn plan_of(req: &CreateChatCompletionRequest, served: &Served) -> Result<Plan, ApiError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid("tools", "tool calls are not supported"));
    }
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid("logit_bias", "is not supported"));
    }
    let messages = messages(&req.messages)?;
    let text = served.template.render(&messages);
    // Message text is text: `<|endoftext|>` in it is not the special token.
    let prompt = (served.tokenizer.encode_with(&text, Allowed::AsText))
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let room = served.n_positions.saturating_sub(prompt.len());
    let max_tokens = match req.max_completion_tokens.or(req.max_tokens) {
        Some(0) => return Err(ApiError::invalid("max_tokens", "must be at least 1")),
        Some(m) => {
            served.check_max_tokens(m as usize, "max_tokens")?;
            m as usize
        }
        None if room == 0 => {
            return Err(ApiError::invalid(
                "messages",
                format!(
                    "the conversation is {} tokens and fills the model's context of {}: leave room for an answer",
                    prompt.len(),
                    served.n_positions
                ),
            ))
        }
        None => served.max_tokens.min(room),
    };
    served.check_prompt(&prompt, max_tokens, "messages")?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), top) => Some(top.unwrap_or(0) as usize),
        (_, Some(t)) if t > 0 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "needs \"logprobs\": true",
            ))
        }
        _ => None,
    };
    let knobs = Knobs {
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: req.stop.clone(),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        top_logprobs: logprobs.unwrap_or(0),
        top_logprobs_param: "top_logprobs",
    };
    let (n, params) = Plan::params(&knobs, max_tokens, served.template.stop(), served)?;
    Ok(Plan {
        prompts: vec![prompt],
        n,
        params,
        max_tokens,
        echo: false,
        logprobs,
        stream: req.stream.unwrap_or(false),
        include_usage: (req.stream_options.as_ref()).is_some_and(|o| o.include_usage == Some(true)),
    })
}

/// The request's messages as text turns; errors name the message.
fn messages(messages: &[RequestMessage]) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "give at least one message"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let only_text = || {
            ApiError::invalid(
                format!("messages[{i}].content"),
                "only text content is supported",
            )
        };
        let (role, content) = match m {
            RequestMessage::System(m) => (
                Role::System,
                match &m.content {
                    SystemContent::Text(t) => t.clone(),
                    SystemContent::Array(parts) => parts
                        .iter()
                        .map(|SystemPart::Text(t)| t.text.as_str())
                        .collect(),
                },
            ),
            RequestMessage::Developer(m) => (
                Role::System,
                match &m.content {
                    DeveloperContent::Text(t) => t.clone(),
                    DeveloperContent::Array(parts) => parts
                        .iter()
                        .map(|DeveloperPart::Text(t)| t.text.as_str())
                        .collect(),
                },
            ),
            RequestMessage::User(m) => (
                Role::User,
                match &m.content {
                    UserContent::Text(t) => t.clone(),
                    UserContent::Array(parts) => parts
                        .iter()
                        .map(|p| match p {
                            UserPart::Text(t) => Ok(t.text.as_str()),
                            _ => Err(only_text()),
                        })
                        .collect::<Result<String, _>>()?,
                },
            ),
            RequestMessage::Assistant(m) => (
                Role::Assistant,
                match &m.content {
                    None => String::new(),
                    Some(AssistantContent::Text(t)) => t.clone(),
                    Some(AssistantContent::Array(parts)) => parts
                        .iter()
                        .map(|p| match p {
                            AssistantPart::Text(t) => Ok(t.text.as_str()),
                            _ => Err(only_text()),
                        })
                        .collect::<Result<String, _>>()?,
                },
            ),
            RequestMessage::Tool(_) | RequestMessage::Function(_) => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    "tool and function messages are not supported",
                ))
            }
        };
        out.push(Message::new(role, content));
    }
    Ok(out)
}

fn choice(served: &Served, plan: &Plan, index: usize, out: SeqOutput) -> ChatChoice {
    ChatChoice {
        index: index as u32,
        message: ChatCompletionResponseMessage {
            content: Some(out.text.clone()),
            role: ApiRole::Assistant,
            ..Default::default()
        },
        finish_reason: Some(reason(plan, out.finish)),
        logprobs: plan.logprobs.map(|_| logprobs(served, &out.tokens)),
    }
}

fn reason(plan: &Plan, finish: Option<Finish>) -> FinishReason {
    match stopped(plan, finish) {
        true => FinishReason::Stop,
        false => FinishReason::Length,
    }
}

/// The chat form of log-probabilities (without the end-of-text token).
fn logprobs(served: &Served, tokens: &[crate::Choice]) -> ChatChoiceLogprobs {
    let eot = served.tokenizer.eot_id();
    let entry = |id: u32, logprob: f32| {
        let bytes = served
            .tokenizer
            .token_bytes(id)
            .unwrap_or_default()
            .to_vec();
        (served.token_text(id), logprob, Some(bytes))
    };
    let content = (tokens.iter())
        .filter(|c| Some(c.token) != eot)
        .map(|c| {
            let (token, logprob, bytes) = entry(c.token, c.logprob);
            ChatCompletionTokenLogprob {
                token,
                logprob,
                bytes,
                top_logprobs: (c.top_logprobs.iter())
                    .map(|&(id, lp)| {
                        let (token, logprob, bytes) = entry(id, lp);
                        TopLogprobs {
                            token,
                            logprob,
                            bytes,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatChoiceLogprobs {
        content: Some(content),
        refusal: None,
    }
}

/// Streaming: a role delta per choice, a content delta per token, a final delta with the
/// finish reason, and the usage chunk if asked.
struct ChatChunks {
    state: Arc<AppState>,
    plan: Plan,
    id: String,
    created: u32,
    timing: plan::Timing,
    completion: usize,
}

impl ChatChunks {
    fn new(state: Arc<AppState>, plan: Plan, id: String, timing: plan::Timing) -> Self {
        ChatChunks {
            state,
            plan,
            id,
            created: plan::now(),
            timing,
            completion: 0,
        }
    }

    fn chunk(&self, choices: Vec<ChatChoiceStream>, usage: Option<CompletionUsage>) -> String {
        let c = CreateChatCompletionStreamResponse {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.state.served.name.clone(),
            choices,
            usage,
            ..Default::default()
        };
        serde_json::to_string(&c).unwrap_or_default()
    }

    fn delta(index: usize, delta: ChatCompletionStreamResponseDelta) -> ChatChoiceStream {
        ChatChoiceStream {
            index: index as u32,
            delta,
            finish_reason: None,
            logprobs: None,
        }
    }
}

impl Chunks for ChatChunks {
    fn opening(&mut self) -> Vec<String> {
        (0..self.plan.count())
            .map(|i| {
                let delta = ChatCompletionStreamResponseDelta {
                    role: Some(ApiRole::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                };
                self.chunk(vec![Self::delta(i, delta)], None)
            })
            .collect()
    }

    fn event(&mut self, seq: usize, event: Event) -> Vec<String> {
        self.timing.token(&self.state.metrics);
        self.completion += 1;
        let mut out = Vec::new();
        let chosen = crate::Choice {
            token: event.token,
            logprob: event.logprob,
            top_logprobs: event.top_logprobs,
        };
        let lp = (self.plan.logprobs)
            .map(|_| logprobs(&self.state.served, std::slice::from_ref(&chosen)))
            .filter(|lp| lp.content.as_ref().is_some_and(|c| !c.is_empty()));
        if !event.text.is_empty() || lp.is_some() {
            let delta = ChatCompletionStreamResponseDelta {
                content: Some(event.text),
                ..Default::default()
            };
            let mut choice = Self::delta(seq, delta);
            choice.logprobs = lp;
            out.push(self.chunk(vec![choice], None));
        }
        if let Some(f) = event.finish {
            let mut choice = Self::delta(seq, Default::default());
            choice.finish_reason = Some(reason(&self.plan, Some(f)));
            out.push(self.chunk(vec![choice], None));
        }
        out
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
