//! The routes, the API-key check, request counting, reading bodies (size and time
//! limits, errors naming the field), and the HTTP server's graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use async_openai::types::models::{ListModelResponse, Model};
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use llm_bpe::Allowed;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{chat, completions, AppState};

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completion))
        .route("/v1/chat/completions", post(chat_completion))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// With `--api-key`, every route but `/health` needs `Authorization: Bearer KEY`.
async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = (req.headers().get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every response by route and status.
async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = (req.extensions().get::<MatchedPath>())
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

/// Reads a JSON body within the size and time limits. A body that is not JSON is a
/// 400; a field of the wrong type or a missing one is a 400 naming it.
async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let limit = state.body_limit;
    let declared = (headers.get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let bytes =
        match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
            Err(_) => return Err(ApiError::timeout()),
            Ok(Err(_)) => return Err(ApiError::too_large(limit)),
            Ok(Ok(b)) => b,
        };
    parse_json(&bytes)
}

/// The byte a JSON object starts with (an opening curly bracket).
const OBJECT_START: u8 = 0x7b;

/// Parses `bytes` as a `T`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from a JSON array too: the API takes objects only.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != OBJECT_START) {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(json_error)?;
    de.end()
        .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A deserialization error as the API's: malformed JSON, or the field at fault.
fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::malformed(format!("the body is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // A missing field is reported at its parent: name the field itself.
    let param = match message.strip_prefix("missing field `") {
        Some(rest) => {
            let field = rest.split('`').next().unwrap_or_default();
            match path.as_str() {
                "." => field.to_string(),
                parent => format!("{parent}.{field}"),
            }
        }
        None if path == "." => "body".to_string(),
        None => path,
    };
    ApiError::invalid(param, message)
}

async fn completion(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(state, &headers, body, completions::handle).await
}

async fn chat_completion(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(state, &headers, body, chat::handle).await
}

/// Reads an endpoint's request from the body and runs `handle` on it; an error at either
/// step is the response.
async fn answer<T: DeserializeOwned, F: Future<Output = Result<Response, ApiError>>>(
    state: Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    handle: impl FnOnce(Arc<AppState>, T) -> F,
) -> Response {
    let result = async {
        let req = read_json(&state, headers, body).await?;
        handle(state.clone(), req).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn model_object(state: &AppState) -> Model {
    Model {
        id: state.served.name.clone(),
        object: "model".into(),
        created: state.served.created,
        owned_by: "llm-e2e".into(),
        shutdown_date: None,
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<ListModelResponse> {
    Json(ListModelResponse {
        object: "list".into(),
        data: vec![model_object(&state)],
    })
}

async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    state.served.check_model(&id)?;
    Ok(Json(model_object(&state)))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "model": state.served.name,
        "queued": state.queue.depth(),
        "slots": state.slots,
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.queue.depth(), state.slots);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// vLLM's tokenizer routes, which lm-evaluation-harness's `tokenizer_backend=remote` uses.
async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let tokenizer = &state.served.tokenizer;
    let eot = tokenizer.eot_id().map(|id| state.served.token_text(id));
    let class = match tokenizer.is_hf() {
        true => "PreTrainedTokenizerFast",
        false => "GPT2Tokenizer",
    };
    Json(json!({
        "eos_token": eot,
        "bos_token": eot,
        "pad_token": null,
        "model_max_length": state.served.n_positions,
        "tokenizer_class": class,
    }))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    prompt: String,
    #[serde(default)]
    #[allow(dead_code)] // GPT-2 adds no special tokens either way.
    add_special_tokens: bool,
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: TokenizeRequest = read_json(&state, &headers, body).await?;
    let tokens = (state
        .served
        .tokenizer
        .encode_with(&req.prompt, Allowed::All))
    .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    Ok(Json(json!({
        "count": tokens.len(),
        "max_model_len": state.served.n_positions,
        "tokens": tokens,
    })))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: DetokenizeRequest = read_json(&state, &headers, body).await?;
    let vocab = state.served.vocab_size;
    if let Some(&id) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token id {id} is outside the vocabulary of {vocab}"),
        ));
    }
    Ok(Json(json!({ "prompt": state.served.decode(&req.tokens) })))
}

/// How long the requests in flight may take to finish after SIGINT / SIGTERM.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves on SIGINT or SIGTERM, which starts the drain. A second signal, or a drain
/// longer than [`DRAIN_TIMEOUT`] (a client that stopped reading, say), exits at once.
pub async fn shutdown_signal() {
    signal().await;
    tracing::info!("shutting down: finishing the requests in flight (a second Ctrl-C quits now)");
    tokio::spawn(async {
        tokio::select! {
            _ = signal() => tracing::warn!("second signal: quitting without finishing"),
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
                tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}: quitting")
            }
        }
        std::process::exit(130);
    });
}

async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
