//! The OpenAI-compatible server, end to end: the `llm-serve` binary serving the fixture
//! model on a free loopback port, spoken to over plain HTTP/1.0 sockets.
//!
//! Every endpoint, every error status, streaming chunk order, the bounded queue (429),
//! a disconnect freeing its slot, and SIGTERM draining a stream in flight.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn fixture_dir() -> PathBuf {
    common::fixture_dir("tiny-gpt2")
}

const MODEL: &str = "tiny-gpt2";

/// A running server; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_model(&fixture_dir(), extra)
    }

    fn start_model(dir: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-serve"))
            .arg("--model")
            .arg(dir)
            .args(["--port", "0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("llm-serve starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("a listening line").unwrap();
            if let Some(rest) = line.strip_prefix("llm-serve: listening on http://") {
                break rest.trim().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    /// Sends a request; the response is read to the end (HTTP/1.0: the server closes).
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut s = self.connect();
        write_request(&mut s, method, path, headers, body);
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        Response::parse(&raw)
    }

    fn post(&self, path: &str, body: Value) -> Response {
        self.send("POST", path, &[], body.to_string().as_bytes())
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], b"")
    }

    /// Polls `/metrics` until `name` reaches `at_least` (30 s at most; `what` names the wait).
    fn wait_for_metric(&self, name: &str, at_least: f64, what: &str) {
        let start = Instant::now();
        while self.metric(name) < at_least {
            assert!(start.elapsed() < Duration::from_secs(30), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        (text.lines())
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_lowercase(), v.to_string()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error object's `param`, checking the status and shape.
    fn error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let e = self.json()["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "error without {key}: {e}");
        }
        e
    }

    /// An event stream's `data:` payloads, `[DONE]` last.
    fn events(&self) -> Vec<String> {
        (self.body.lines())
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn reference() -> Value {
    common::reference("tiny-gpt2")
}

#[test]
fn models_health_metrics_and_tokenizer_routes_answer() {
    let server = Server::start(&[]);
    let models = server.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(server.get("/v1/models/tiny-gpt2").json()["id"], MODEL);
    assert_eq!(
        server.get("/v1/models/gpt-4").error(404)["code"],
        "model_not_found"
    );
    assert_eq!(server.get("/health").json()["status"], "ok");
    let metrics = server.get("/metrics");
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    for name in [
        "llm_requests_total",
        "llm_queue_depth",
        "llm_prompt_tokens_total",
        "llm_request_duration_seconds_bucket",
        "llm_time_to_first_token_seconds_count",
    ] {
        assert!(metrics.body.contains(name), "{name} missing");
    }
    assert_eq!(
        server.get("/tokenizer_info").json()["eos_token"],
        "<|endoftext|>"
    );
    let ids = server
        .post("/tokenize", json!({"prompt": "Hello<|endoftext|>"}))
        .json();
    assert_eq!(ids["tokens"], json!([15496, 50256]));
    let text = server
        .post("/detokenize", json!({"tokens": [15496, 995]}))
        .json();
    assert_eq!(text["prompt"], "Hello world");
    assert_eq!(server.get("/nowhere").error(404)["type"], "not_found_error");
    assert_eq!(server.get("/v1/completions").status, 405);
}

#[test]
fn completions_take_every_prompt_form_and_greedy_matches_transformers() {
    let server = Server::start(&[]);
    let case = &reference()["generation"][0];
    let prompt: Vec<u64> = serde_json::from_value(case["prompt"].clone()).unwrap();
    let want: Vec<u64> = serde_json::from_value(case["new_tokens"].clone()).unwrap();
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": want.len(), "temperature": 0, "logprobs": 0});
    let r = server.post("/v1/completions", body).json();
    assert_eq!(r["object"], "text_completion");
    let tokens = r["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tokens, want.len());
    let usage = &r["usage"];
    assert_eq!(usage["prompt_tokens"], prompt.len());
    assert_eq!(usage["completion_tokens"], want.len());
    // The same ids as text give the same text.
    let detok = server.post("/detokenize", json!({"tokens": want})).json();
    assert_eq!(r["choices"][0]["text"], detok["prompt"]);

    let r = server.post("/v1/completions", json!({"model": MODEL, "prompt": ["Hello", "The cat"], "max_tokens": 3, "n": 2, "temperature": 0.8, "seed": 7, "echo": true})).json();
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    // Prompt by prompt, n choices each, each choice with its own seed.
    let text = |i: usize| choices[i]["text"].as_str().unwrap().to_string();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let prompt = ["Hello", "The cat"][i / 2];
        assert!(text(i).starts_with(prompt), "choice {i}: {}", text(i));
    }
    assert_ne!(text(0), text(1), "the n choices of a prompt differ");
    let r = server
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": [[15496], [464, 3797]], "max_tokens": 2}),
        )
        .json();
    assert_eq!(r["choices"].as_array().unwrap().len(), 2);
    let r = server.post("/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 40, "stop": [" ", "e"], "temperature": 0})).json();
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(!r["choices"][0]["text"].as_str().unwrap().contains('e'));
    // A seed repeats a sampled completion.
    let sampled = || {
        server.post("/v1/completions", json!({"model": MODEL, "prompt": "Once", "max_tokens": 8, "seed": 3, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": 0.5})).json()["choices"][0]["text"].clone()
    };
    assert_eq!(sampled(), sampled());
}

/// A Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention) with its SentencePiece-style
/// tokenizer is served like GPT-2: greedy completions are transformers' tokens, text and
/// chat work, in f32 and int8.
#[test]
fn a_llama_is_served_and_greedy_matches_transformers() {
    let dir = common::fixture_dir("tiny-llama");
    let r = common::reference("tiny-llama");
    let g = &r["greedy"];
    let want = g["new_tokens_cached"].clone();
    for quant in ["f32", "q8"] {
        let server = Server::start_model(&dir, &["--quant", quant]);
        let body = json!({"model": "tiny-llama", "prompt": g["prompt_ids"], "max_tokens": 12, "temperature": 0});
        let got = server.post("/v1/completions", body).json();
        let detok = server.post("/detokenize", json!({"tokens": want})).json();
        if quant == "f32" {
            assert_eq!(got["choices"][0]["text"], detok["prompt"], "{got}");
        }
        assert_eq!(got["usage"]["completion_tokens"], 12);
        let chat = json!({"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello world"}], "max_tokens": 4, "stream": true});
        let events = server.post("/v1/chat/completions", chat).events();
        assert_eq!(events.last().unwrap(), "[DONE]", "{quant}");
        let ids = server
            .post("/tokenize", json!({"prompt": "Hello world"}))
            .json();
        // transformers' ids with add_special_tokens: <s> first.
        assert_eq!(ids["tokens"], r["tokenizer_checks"][0]["ids"], "{quant}");
    }
}

#[test]
fn echo_logprobs_score_the_prompt_as_the_reference_loss() {
    let server = Server::start(&[]);
    for s in reference()["sequences"].as_array().unwrap() {
        let Some(loss) = s["loss"].as_f64() else {
            continue;
        };
        let ids = s["input_ids"].clone();
        let n = ids.as_array().unwrap().len();
        let r = server.post("/v1/completions", json!({"model": MODEL, "prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 1})).json();
        let lp = &r["choices"][0]["logprobs"];
        let token_logprobs = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(
            token_logprobs.len(),
            n,
            "one entry per prompt token, no new one"
        );
        assert!(token_logprobs[0].is_null());
        assert!(lp["top_logprobs"][0].is_null());
        let nll = -token_logprobs[1..]
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum::<f64>()
            / (n - 1) as f64;
        assert!(
            (nll - loss).abs() <= 1e-4 * loss,
            "{}: {nll} against {loss}",
            s["name"]
        );
        assert_eq!(r["choices"][0]["finish_reason"], "length");
        assert_eq!(r["usage"]["completion_tokens"], 0);
    }
}

#[test]
fn chat_streams_role_content_finish_usage_then_done() {
    let server = Server::start(&[]);
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]);
    let r = server
        .post(
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0}),
        )
        .json();
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let whole = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let body = json!({"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let stream = server.post("/v1/chat/completions", body);
    assert!(stream
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = stream.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    assert!(chunks
        .iter()
        .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    let streamed: String = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(streamed, whole, "streamed text equals the whole answer");

    let r = server.post("/v1/chat/completions", json!({"model": MODEL, "messages": messages, "max_tokens": 3, "logprobs": true, "top_logprobs": 2})).json();
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_requests_get_openai_errors_naming_the_field() {
    let server = Server::start(&["--max-tokens", "64", "--max-body-bytes", "4096"]);
    let post = |body: &str| server.send("POST", "/v1/completions", &[], body.as_bytes());
    assert_eq!(post("{\"model\": ").error(400)["code"], "invalid_json");
    assert_eq!(
        post("{\"model\": \"x\",,}").error(400)["code"],
        "invalid_json"
    );
    assert_eq!(post("[1, 2]").error(400)["param"], "body");
    let e = server
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": "a", "max_tokens": "many"}),
        )
        .error(400);
    assert_eq!(e["param"], "max_tokens");
    assert_eq!(
        server
            .post("/v1/completions", json!({"prompt": "a"}))
            .error(400)["param"],
        "model"
    );
    let e = server
        .post(
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}),
        )
        .error(400);
    assert!(e["param"].as_str().unwrap().starts_with("messages"), "{e}");
    assert_eq!(
        server
            .post("/v1/completions", json!({"model": "gpt-5", "prompt": "a"}))
            .error(404)["param"],
        "model"
    );
    let long: Vec<u32> = vec![464; 120];
    let e = server
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": long, "max_tokens": 20}),
        )
        .error(400);
    assert_eq!(
        e["param"], "max_tokens",
        "prompt + max_tokens beyond the context of 128"
    );
    let e = server
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": "a", "max_tokens": 65}),
        )
        .error(400);
    assert!(e["message"].as_str().unwrap().contains("--max-tokens"));
    // Values out of range: 400 naming the parameter.
    for (body, param) in [
        (json!({"model": MODEL, "prompt": [99999]}), "prompt"),
        (
            json!({"model": MODEL, "prompt": "a", "temperature": 3}),
            "temperature",
        ),
        (json!({"model": MODEL, "prompt": "a", "top_p": 0}), "top_p"),
        (json!({"model": MODEL, "prompt": "a", "n": 0}), "n"),
    ] {
        let e = server.post("/v1/completions", body.clone()).error(400);
        assert_eq!(e["param"], param, "{body} -> {e}");
    }
    let big = json!({"model": MODEL, "prompt": "x".repeat(5000)});
    assert_eq!(
        server.post("/v1/completions", big).error(413)["code"],
        "request_too_large"
    );
    // None of that hurt the server.
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn an_api_key_guards_every_route_but_health() {
    let server = Server::start(&["--api-key", "s3cret"]);
    assert_eq!(
        server.get("/v1/models").error(401)["code"],
        "invalid_api_key"
    );
    let wrong = server.send(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    wrong.error(401);
    let right = server.send(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(right.status, 200);
    assert_eq!(server.get("/health").status, 200);
}

/// A request that keeps the one slot busy for many steps, streamed.
fn long_stream(server: &Server) -> TcpStream {
    let body = json!({"model": MODEL, "prompt": "a", "max_tokens": 120, "n": 64, "stream": true, "temperature": 0});
    let mut s = server.connect();
    write_request(
        &mut s,
        "POST",
        "/v1/completions",
        &[],
        body.to_string().as_bytes(),
    );
    // Wait for the first token: the job is in the engine, not in the queue.
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    s
}

#[test]
fn a_full_queue_answers_429_and_a_disconnect_frees_the_slot() {
    let server = Server::start(&["--parallel", "1", "--max-queue", "1"]);
    let busy = long_stream(&server);
    // One request waits in the queue; the next is refused.
    let body = json!({"model": MODEL, "prompt": "b", "max_tokens": 2}).to_string();
    let mut queued = server.connect();
    write_request(&mut queued, "POST", "/v1/completions", &[], body.as_bytes());
    server.wait_for_metric("llm_queue_depth", 1.0, "the request never queued");
    let refused = server.post(
        "/v1/completions",
        json!({"model": MODEL, "prompt": "c", "max_tokens": 2}),
    );
    assert_eq!(refused.error(429)["type"], "rate_limit_error");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The streaming client leaves: its sequence is cancelled and the queued one runs.
    drop(busy);
    let mut raw = Vec::new();
    queued.read_to_end(&mut raw).unwrap();
    let done = Response::parse(&raw);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(server.metric("llm_cancelled_sequences_total") >= 1.0);
}

#[test]
fn sigterm_finishes_the_stream_in_flight_then_exits() {
    let mut server = Server::start(&[]);
    let body = json!({"model": MODEL, "prompt": "a", "max_tokens": 100, "n": 8, "stream": true, "temperature": 0});
    let mut s = server.connect();
    write_request(
        &mut s,
        "POST",
        "/v1/completions",
        &[],
        body.to_string().as_bytes(),
    );
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {rest}"
    );
    let finished = rest.matches("\"finish_reason\":\"length\"").count();
    assert_eq!(finished, 8, "every sequence ran to its end");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn echo_text_tokens_and_offsets_line_up_streamed_or_not() {
    let server = Server::start(&[]);
    // "naïve 😀" splits characters across tokens.
    let body = json!({"model": MODEL, "prompt": "A naïve 😀 cat", "max_tokens": 5, "echo": true, "logprobs": 2, "temperature": 0});
    let r = server.post("/v1/completions", body.clone()).json();
    let c = &r["choices"][0];
    let text = c["text"].as_str().unwrap();
    assert!(text.starts_with("A naïve 😀 cat"), "{text}");
    let lp = &c["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let prompt_len = server
        .post("/tokenize", json!({"prompt": "A naïve 😀 cat"}))
        .json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tokens.len(), prompt_len + 5);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    // Where a token starts on a whole character, the text from its offset begins with it.
    let chars: Vec<char> = text.chars().collect();
    for (t, &o) in tokens.iter().zip(&offsets) {
        if !t.contains('\u{FFFD}') {
            let rest: String = chars[o as usize..].iter().collect();
            assert!(rest.starts_with(t), "token {t:?} at {o}: {rest:?}");
        }
    }
    // Greedy tokens: the best alternative is the token, with the very same number
    // (lm-evaluation-harness's `is_greedy` compares them).
    for i in prompt_len..tokens.len() {
        let best = (lp["top_logprobs"][i].as_object().unwrap().values())
            .map(|v| v.as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(best, lp["token_logprobs"][i].as_f64().unwrap(), "token {i}");
    }
    // The same request streamed gives the same text and log-probabilities.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = server.post("/v1/completions", streamed).events();
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text);
    let streamed_lp: Vec<Value> = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["logprobs"]["token_logprobs"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(&streamed_lp, lp["token_logprobs"].as_array().unwrap());
}

#[test]
fn a_client_that_leaves_a_whole_answer_frees_its_slot_too() {
    let server = Server::start(&["--parallel", "1"]);
    let body = json!({"model": MODEL, "prompt": "a", "max_tokens": 120, "n": 64, "temperature": 0});
    let mut s = server.connect();
    write_request(
        &mut s,
        "POST",
        "/v1/completions",
        &[],
        body.to_string().as_bytes(),
    );
    server.wait_for_metric("llm_running_sequences", 1.0, "the request never ran");
    drop(s);
    server.wait_for_metric(
        "llm_cancelled_sequences_total",
        1.0,
        "the sequence was not cancelled",
    );
    let r = server.post(
        "/v1/completions",
        json!({"model": MODEL, "prompt": "b", "max_tokens": 2}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn slow_clients_time_out_and_connections_are_capped() {
    let server = Server::start(&["--request-timeout", "1", "--max-connections", "2"]);
    let started = std::time::Instant::now();
    // Headers that never end: the connection is closed.
    let mut slow_head = server.connect();
    slow_head
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow_head.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a half-sent head was held {:?}",
        started.elapsed()
    );
    // A body that never arrives: 408.
    let mut slow_body = server.connect();
    slow_body
        .write_all(b"POST /v1/completions HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"")
        .unwrap();
    let mut raw = Vec::new();
    slow_body.read_to_end(&mut raw).unwrap();
    let response = Response::parse(&raw);
    assert_eq!(response.status, 408, "{}", response.body);
    // Two idle connections fill the cap: a third waits until one of them goes.
    let idle: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    let mut waiting = server.connect();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    write_request(&mut waiting, "GET", "/health", &[], b"");
    let mut byte = [0u8; 1];
    assert!(
        waiting.read(&mut byte).is_err(),
        "a connection past --max-connections was served at once"
    );
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut raw = byte[..0].to_vec();
    waiting.read_to_end(&mut raw).unwrap();
    assert_eq!(Response::parse(&raw).status, 200);
}
