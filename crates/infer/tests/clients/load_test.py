#!/usr/bin/env python3
"""A bounded load test: N concurrent streaming clients send completions until a number
of requests (or seconds) is reached. Every request must complete or get a clean 429/503;
anything else fails the run. Reports p50/p99 latency and time to first token, aggregate
tokens/s, and the server's RSS after warm-up and at the end (it must stay flat).

    python3 load_test.py target/debug/llm-serve --clients 8 --requests 1000   # CI
    python3 load_test.py --url http://127.0.0.1:8000 --model gpt2 ...          # any server
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

from server import FIXTURE, MODEL, Server

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Load:
    """Shared counters of one run."""

    def __init__(self, url, model, max_tokens, requests, seconds):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.model, self.max_tokens = model, max_tokens
        self.budget, self.deadline = requests, time.monotonic() + seconds
        self.lock = threading.Lock()
        self.started = 0
        self.latency, self.ttft, self.tokens = [], [], 0
        self.rejected, self.errors = 0, []
        self.on_done = None

    def take(self):
        with self.lock:
            if self.started >= self.budget or time.monotonic() > self.deadline:
                return False
            self.started += 1
            return True

    def one(self, seed):
        """One streaming request; returns (status, tokens, ttft, latency)."""
        body = json.dumps({"model": self.model, "prompt": PROMPT, "max_tokens": self.max_tokens,
                           "temperature": 0.8, "seed": seed, "stream": True,
                           "stream_options": {"include_usage": True}})
        start = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        try:
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            if r.status != 200:
                text = r.read().decode(errors="replace")
                return r.status, 0, None, None, text
            tokens, ttft, done, usage = 0, None, False, None
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return 500, tokens, ttft, None, data
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                if chunk["choices"]:
                    tokens += 1
                    if ttft is None:
                        ttft = time.perf_counter() - start
            if not done:
                return 599, tokens, ttft, None, "the stream ended without [DONE]"
            # A chunk may carry more than one token: the usage count is exact.
            return 200, usage if usage is not None else tokens, ttft, time.perf_counter() - start, ""
        finally:
            conn.close()

    def client(self, index):
        seed = index * 1_000_003
        while self.take():
            seed += 1
            try:
                status, tokens, ttft, latency, text = self.one(seed)
            except Exception as e:  # a dropped connection is an error
                status, tokens, ttft, latency, text = 0, 0, None, None, repr(e)
            with self.lock:
                if status == 200:
                    self.latency.append(latency)
                    self.ttft.append(ttft)
                    self.tokens += tokens
                    if self.on_done:
                        self.on_done(len(self.latency))
                elif status in (429, 503):
                    self.rejected += 1
                    self.started -= 1  # the budget counts completed requests
                else:
                    self.errors.append(f"{status}: {text[:200]}")
            if status in (429, 503):
                time.sleep(0.05)


def run(url, model, clients, requests, seconds, max_tokens, rss=None, warmup=100):
    load = Load(url, model, max_tokens, requests, seconds)
    samples = {}
    if rss:
        def sample(done):
            if done == warmup or done % 100 == 0:
                samples[done] = rss()
        load.on_done = sample
    threads = [threading.Thread(target=load.client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    report = {
        "clients": clients,
        "completed": len(load.latency),
        "rejected_429_503": load.rejected,
        "errors": len(load.errors),
        "wall_s": round(wall, 2),
        "tok_s": round(load.tokens / wall, 1),
        "latency_p50_s": round(percentile(load.latency, 50), 4),
        "latency_p99_s": round(percentile(load.latency, 99), 4),
        "ttft_p50_s": round(percentile(load.ttft, 50), 4),
        "ttft_p99_s": round(percentile(load.ttft, 99), 4),
    }
    if samples:
        report["rss_mib"] = {k: round(v, 1) for k, v in sorted(samples.items())}
    return report, load.errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", help="llm-serve to start on the fixture (else --url)")
    ap.add_argument("--url")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rss-growth-mib", type=float, default=16,
                    help="fail if RSS grows more than this after warm-up")
    args = ap.parse_args()
    if args.binary:
        # A queue smaller than the clients, so some requests meet a full queue (429).
        with Server(args.binary, FIXTURE, "--parallel", "4", "--max-queue", "2") as server:
            report, errors = run(server.addr, args.model, args.clients, args.requests, args.seconds,
                                 args.max_tokens, rss=server.rss_mib)
    else:
        report, errors = run(args.url, args.model, args.clients, args.requests, args.seconds, args.max_tokens)
    print(json.dumps(report))
    assert not errors, errors[:5]
    assert report["completed"] >= 1, report
    rss = report.get("rss_mib")
    if rss and len(rss) > 1:
        first, last = list(rss.values())[0], list(rss.values())[-1]
        assert last - first <= args.rss_growth_mib, f"RSS grew {last - first:.1f} MiB after warm-up: {rss}"
        print(f"RSS flat: {first:.1f} MiB after {list(rss)[0]} requests, {last:.1f} MiB after {list(rss)[-1]}")


if __name__ == "__main__":
    main()
