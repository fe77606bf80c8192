#!/usr/bin/env python3
"""Load for `cargo bench -p llm-infer --bench serve`: the same streaming clients
(`crates/infer/tests/clients/load_test.py`) at each concurrency, against our server at
`--url`, or against a llama.cpp server this script starts on the same weights:

- `--peer llama-server`: llama.cpp's C++ server (`LLAMA_SERVER`, built from the
  llama.cpp that llama-cpp-python vendors), `-np` slots and continuous batching;
- `--peer llama-cpp-python`: `python -m llama_cpp.server` (llama-cpp-python[server]),
  which runs one request at a time.

Prints one JSON object: a report per concurrency, and the peer's peak RSS.
"""

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "crates/infer/tests/clients"))
import load_test  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=300):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the peer exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the peer did not start")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_peer(kind, gguf, parallel, threads, n_ctx):
    port = free_port()
    if kind == "llama-server":
        binary = os.environ.get("LLAMA_SERVER")
        if not binary:
            raise SystemExit("set LLAMA_SERVER to llama.cpp's llama-server binary")
        cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
               "-c", str(n_ctx * parallel), "-t", str(threads), "-tb", str(threads), "-cb",
               "--no-webui", "-a", "gpt2"]
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stderr.strip().splitlines()
        name = f"llama.cpp llama-server ({version[0] if version else '?'})"
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--interrupt_requests", "False", "--model_alias", "gpt2"]
        import llama_cpp
        name = f"llama-cpp-python[server] {llama_cpp.__version__} (one request at a time)"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url, name


def measure(url, model, clients, seconds, max_tokens):
    reports = []
    for c in clients:
        # A short warm-up, then the timed run.
        load_test.run(url, model, c, c, 60, max_tokens)
        report, errors = load_test.run(url, model, c, 10**9, seconds, max_tokens)
        assert not errors, errors[:3]
        reports.append(report)
        print(json.dumps(report), file=sys.stderr)
    return reports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="a running server to load")
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--peer", choices=["llama-server", "llama-cpp-python"])
    ap.add_argument("--model-dir", help="the HF directory to convert for the peer")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.url:
        print(json.dumps({"reports": measure(args.url, args.model, clients, args.seconds, args.max_tokens)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        gguf = os.path.join(tmp, "model-f32.gguf")
        subprocess.run([sys.executable, str(ROOT / "bench/llama_peer.py"), "--convert-only", "--hf-dir",
                        args.model_dir, "--vocab-dir", str(ROOT / "assets/gpt2"), "--quant", "f32",
                        "--gguf", gguf], check=True)
        proc, url, name = start_peer(args.peer, gguf, args.parallel, args.threads, args.n_ctx)
        try:
            reports = measure(url, "gpt2", clients, args.seconds, args.max_tokens)
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(json.dumps({"peer": name, "reports": reports, "peak_rss_mib": round(rss, 1)}))


if __name__ == "__main__":
    main()
