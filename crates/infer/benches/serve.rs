//! Serving throughput: our server against llama.cpp's, in the same run, on GPT-2 124M's
//! shape with random weights (f32), with 1, 4 and 16 concurrent streaming clients.
//!
//! `cargo bench -p llm-infer --bench serve` writes the model, starts this binary as the
//! server (`--serve DIR`, 16 slots), loads it with `bench/serve_load.py`, then does the
//! same to llama.cpp's C++ `llama-server` (`LLAMA_SERVER=path`, `-np 16`) and to
//! llama-cpp-python's server, on the same weights converted to GGUF. Prints each
//! concurrency's aggregate tokens/s, latency and time to first token, the ratios, and
//! peak RSS. `-- --no-peer` skips the peers; `-- --seconds N` sets each run's length.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use llm_common::bench::{rss_mib_of, Rss};
use llm_infer::server::{serve, ServeArgs};
use llm_model::{Gpt, Gpt2Config};
use serde_json::Value;

type B = Flex;

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

const SLOTS: usize = 16;
const NAME: &str = "gpt2";

fn write_model(dir: &Path) {
    let device = Default::default();
    B::seed(&device, 7);
    let config = Gpt2Config::gpt2();
    let model: Gpt<B> = config.init(&device).unwrap();
    llm_model::weights::save_hf_dir(&model, &config, dir).unwrap();
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the server in this process (the child side of the bench).
fn serve_here(dir: &str) {
    let args = ServeArgs {
        model: dir.into(),
        served_model_name: Some(NAME.into()),
        tokenizer: None,
        backend: llm_infer::server::default_backend(),
        quant: None,
        kv_cache: Default::default(),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        api_key: None,
        parallel: SLOTS,
        max_queue: 256,
        max_tokens: 1024,
        max_body_bytes: 1 << 20,
        request_timeout: 30,
        max_connections: 512,
    };
    serve(args).unwrap();
}

/// Starts `--serve DIR` and returns it with its address.
fn start_server(dir: &Path) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", dir.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the server's listening line").unwrap();
        if let Some(a) = line.strip_prefix("llm-serve: listening on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn load(args: &[&str]) -> Option<Value> {
    let out = Command::new("python3")
        .arg(root().join("bench/serve_load.py"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("serve_load.py {args:?} failed");
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

fn tok_s(r: &Value, i: usize) -> f64 {
    r["reports"][i]["tok_s"].as_f64().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str| (args.iter().position(|a| a == name)).and_then(|i| args.get(i + 1).cloned());
    if let Some(dir) = arg("--serve") {
        // As the `llm-serve` binary runs.
        llm_model::alloc::keep_freed_memory();
        llm_model::alloc::commit_lazily();
        return serve_here(&dir);
    }
    if !args.iter().any(|a| a == "--bench")
        && !args.iter().any(|a| a == "--no-peer")
        && arg("--seconds").is_none()
    {
        // `cargo test --benches` runs bench binaries without --bench: nothing to do.
        return;
    }
    let seconds = arg("--seconds").unwrap_or_else(|| "30".into());
    let clients = "1,4,16";
    let dir = std::env::temp_dir().join(format!("llm-infer-serve-{}", std::process::id()));
    write_model(&dir);
    println!("host: {}", llm_model::kernels::host_summary());

    let (mut child, addr) = start_server(&dir);
    let ours = load(&[
        "--url",
        &addr,
        "--model",
        NAME,
        "--clients",
        clients,
        "--seconds",
        &seconds,
    ])
    .expect("our server's load run");
    let our_rss = rss_mib_of(&child.id().to_string(), Rss::Peak);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let mut peers = Vec::new();
    if !args.iter().any(|a| a == "--no-peer") {
        let model_dir = dir.to_str().unwrap();
        let slots = SLOTS.to_string();
        for peer in ["llama-server", "llama-cpp-python"] {
            if peer == "llama-server" && std::env::var_os("LLAMA_SERVER").is_none() {
                println!("(LLAMA_SERVER not set: skipping llama.cpp's C++ server)");
                continue;
            }
            let common = [
                "--model-dir",
                model_dir,
                "--parallel",
                &slots,
                "--clients",
                clients,
                "--seconds",
                &seconds,
            ];
            if let Some(r) = load(&[&["--peer", peer][..], &common[..]].concat()) {
                peers.push(r);
            }
        }
    }

    println!("\nserving GPT-2 124M shape, random f32 weights, {SLOTS} slots, 64 new tokens per request, {seconds} s per run");
    println!(
        "{:<44} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "server", "clients", "tok/s", "p50 s", "p99 s", "ttft p50"
    );
    let rows = |name: &str, r: &Value| {
        for (i, c) in clients.split(',').enumerate() {
            let rep = &r["reports"][i];
            println!(
                "{:<44} {:>8} {:>12.1} {:>10.3} {:>10.3} {:>10.3}",
                name,
                c,
                tok_s(r, i),
                rep["latency_p50_s"].as_f64().unwrap_or(f64::NAN),
                rep["latency_p99_s"].as_f64().unwrap_or(f64::NAN),
                rep["ttft_p50_s"].as_f64().unwrap_or(f64::NAN),
            );
        }
    };
    rows("llm-e2e (this server)", &ours);
    for p in &peers {
        rows(p["peer"].as_str().unwrap_or("peer"), p);
    }
    println!(
        "\nllm-e2e: 16 clients / 1 client = {:.2}x; peak RSS {our_rss:.0} MiB",
        tok_s(&ours, 2) / tok_s(&ours, 0)
    );
    for p in &peers {
        let ratios: Vec<String> = (0..3)
            .map(|i| format!("{:.2}x", tok_s(&ours, i) / tok_s(p, i)))
            .collect();
        println!(
            "against {}: {} at 1/4/16 clients; its peak RSS {} MiB",
            p["peer"].as_str().unwrap_or("peer"),
            ratios.join(" / "),
            p["peak_rss_mib"]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
