//! # An OpenAI-compatible server on the engine
//!
//! `cargo xtask serve --model MODEL` (or the `llm-serve` binary, which does not build the
//! trainer) serves one model over HTTP with the OpenAI API's shapes, taken from
//! `async-openai`'s types:
//!
//! - `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`;
//! - `GET /health`, `GET /metrics` (Prometheus text);
//! - vLLM's `GET /tokenizer_info`, `POST /tokenize` and `POST /detokenize`, which
//!   lm-evaluation-harness uses to count tokens.
//!
//! Concurrent requests share the engine's batch slots (continuous batching): the engine
//! runs on its own thread ([`scheduler`]), the HTTP side on tokio. The queue is bounded
//! (429 with `Retry-After` when full), a client that leaves frees its slots before the
//! next step, and SIGINT / SIGTERM finish what is in flight, then exit. `docs/serve.md`
//! is the user's guide.

mod chat;
mod completions;
mod error;
mod listen;
mod metrics;
mod plan;
mod routes;
mod scheduler;
mod sse;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_openai::types::chat::CompletionUsage;
use axum::response::Response;
use clap::builder::RangedU64ValueParser;
use llm_model::backend::{run_on, BackendKind, BackendTask};
use llm_model::KernelBackend;
use tokio::sync::mpsc;

pub use error::ApiError;
pub use routes::parse_json;

use crate::load::{self, LocatedModel};
use crate::{Engine, KvDtype, Quant};
use metrics::Metrics;
use plan::{Plan, SeqOutput, Served, Timing};
use scheduler::{Job, Queue, SeqEvent};

/// `cargo xtask serve` / `llm-serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// A Hugging Face model directory, a hub id (resolved from the local hub cache first),
    /// an llm-e2e checkpoint file, or a training run's directory.
    #[arg(long)]
    pub model: String,
    /// The name clients ask for in `model` (default: the `--model` value's last part).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Tokenizer (`gpt2`, a directory or a tokenizer.json); by default the model's own.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// The Burn backend to run on (see `cargo xtask backends`).
    #[arg(long, default_value_t = default_backend())]
    pub backend: String,
    /// Weights: `f32`, or `q8` (int8 Q8_0, quantized at load).
    #[arg(long)]
    pub quant: Option<Quant>,
    /// How the KV cache stores keys and values: `f32` or `f16`.
    #[arg(long, default_value = "f32")]
    pub kv_cache: KvDtype,
    /// Address to bind. Anything but loopback is reachable from other machines: set
    /// `--api-key` then.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every route but `/health`.
    #[arg(long, env = "LLM_E2E_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Sequences generated at once: the engine's batch slots.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 429 with `Retry-After`.
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_queue: usize,
    /// The most `max_tokens` one request may ask for.
    #[arg(long, default_value_t = 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_tokens: usize,
    /// The largest request body, in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request's headers (the connection is closed
    /// after), and again its body (408 after).
    #[arg(long, default_value_t = 30, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub request_timeout: u64,
    /// Connections open at once; more wait to be accepted.
    #[arg(long, default_value_t = 512, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
}

/// The compiled backend used when `--backend` is not given.
pub fn default_backend() -> String {
    BackendKind::default_compiled().map_or("flex".into(), |k| k.name().into())
}

/// What the HTTP handlers share.
pub struct AppState {
    served: Served,
    queue: Queue,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
    body_limit: usize,
    body_timeout: Duration,
    slots: usize,
    next_id: AtomicU64,
}

impl AppState {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a plan's sequences; its events arrive on the returned receiver.
    fn submit(&self, plan: &Plan) -> Result<(mpsc::UnboundedReceiver<SeqEvent>, usize), ApiError> {
        let sequences = plan.sequences()?;
        let count = sequences.len();
        let (events, rx) = mpsc::unbounded_channel();
        (self.queue.submit(Job { sequences, events }))
            .map_err(|_| ApiError::busy(self.queue.depth()))?;
        Ok((rx, count))
    }
}

impl AppState {
    /// Runs a checked plan: streamed through the endpoint's `chunks`, or answered whole
    /// by `whole` once every sequence has finished.
    async fn respond<C: sse::Chunks>(
        self: Arc<Self>,
        plan: Plan,
        id_prefix: &str,
        chunks: impl FnOnce(Arc<Self>, Plan, String, Timing) -> C,
        whole: impl FnOnce(&Self, &Plan, String, Vec<SeqOutput>, CompletionUsage) -> Response,
    ) -> Result<Response, ApiError> {
        let (mut events, count) = self.submit(&plan)?;
        let id = format!("{id_prefix}-{}", self.next_id());
        let mut timing = Timing::start();
        if plan.stream {
            return Ok(sse::stream(events, count, chunks(self, plan, id, timing)));
        }
        let outputs = plan::collect(&mut events, count, &mut timing, &self.metrics).await?;
        let completion = outputs.iter().map(|o| plan.shown(o.tokens.len())).sum();
        timing.finish(&self.metrics, plan.prompt_tokens(), completion);
        let usage = plan::usage(plan.prompt_tokens(), completion);
        Ok(whole(&self, &plan, id, outputs, usage))
    }
}

/// Loads the model and serves it until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<()> {
    let located = load::locate(&args.model, args.tokenizer.as_deref())?;
    if let Some(note) = &located.note {
        tracing::info!("using {note}");
    }
    let backend: BackendKind = args.backend.parse()?;
    let listener = std::net::TcpListener::bind((args.host, args.port))
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    listener.set_nonblocking(true)?;
    if !args.host.is_loopback() && args.api_key.is_none() {
        tracing::warn!(
            "listening on {} without --api-key: anyone who can reach this address can use the model",
            args.host
        );
    }
    run_on(
        backend,
        ServeTask {
            args,
            located,
            listener,
        },
    )?
}

struct ServeTask {
    args: ServeArgs,
    located: LocatedModel,
    listener: std::net::TcpListener,
}

impl BackendTask for ServeTask {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let ServeTask {
            args,
            located,
            listener,
        } = self;
        let model = load::load_model::<B>(&located.source, args.quant, &device)?;
        load::check_vocab(&located.tokenizer, model.vocab_size())?;
        let tokenizer = Arc::new(located.tokenizer);
        let served = Served {
            name: (args.served_model_name.clone()).unwrap_or_else(|| default_name(&args.model)),
            tokenizer: tokenizer.clone(),
            template: located.template,
            n_positions: model.n_positions(),
            vocab_size: model.vocab_size(),
            max_tokens: args.max_tokens,
            created: plan::now(),
        };
        let mut engine = Engine::with_kv(
            model,
            Some(tokenizer),
            args.parallel,
            args.kv_cache,
            &device,
        )?;
        let (queue, jobs) = scheduler::queue(args.max_queue);
        let metrics = Arc::new(Metrics::default());
        let addr = listener.local_addr()?;
        tracing::info!(
            "serving {:?} (chat template: {}, {} slots)",
            served.name,
            served.template.name(),
            args.parallel
        );
        let state = Arc::new(AppState {
            served,
            queue,
            metrics: metrics.clone(),
            api_key: args.api_key.clone(),
            body_limit: args.max_body_bytes,
            body_timeout: Duration::from_secs(args.request_timeout),
            slots: args.parallel,
            next_id: AtomicU64::new(0),
        });
        let limits = listen::Limits {
            max_connections: args.max_connections,
            header_timeout: Duration::from_secs(args.request_timeout),
        };
        let http = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || http_server(listener, state, limits))?;
        // Tests and scripts wait for this line.
        eprintln!("llm-serve: listening on http://{addr}");
        scheduler::run(&mut engine, jobs, &metrics);
        http.join()
            .map_err(|_| anyhow::anyhow!("the HTTP server thread panicked"))?
    }
}

/// Serves HTTP on its own tokio runtime until a shutdown signal and the drain.
fn http_server(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    limits: listen::Limits,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-worker")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = routes::router(state);
        listen::serve(listener, app, limits, routes::shutdown_signal())
            .await
            .context("serving HTTP")
    })
}

/// `gpt2` for a hub id, else the path's last part without its extension.
fn default_name(model: &str) -> String {
    let path = Path::new(model);
    match path.exists() {
        true => (path.file_stem()).map_or(model.to_string(), |s| s.to_string_lossy().into_owned()),
        false => model.to_string(),
    }
}
