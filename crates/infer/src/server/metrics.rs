//! Prometheus metrics: requests by route and status, tokens, queue depth, running
//! sequences and latency histograms, as text for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram.
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (c, _) in (self.counts.iter_mut())
            .zip(BUCKETS)
            .filter(|(_, b)| seconds <= *b)
        {
            *c += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    running: AtomicU64,
    cancelled: AtomicU64,
    request_seconds: Mutex<Histogram>,
    first_token_seconds: Mutex<Histogram>,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        let mut r = self.requests.lock().expect("metrics lock");
        *r.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    /// Sequences stopped because their client left.
    pub fn cancelled(&self, n: usize) {
        self.cancelled.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn set_running(&self, n: usize) {
        self.running.store(n as u64, Ordering::Relaxed);
    }

    /// A generation request's whole time, from arrival to its last token.
    pub fn finished(&self, elapsed: Duration) {
        (self.request_seconds.lock().expect("metrics lock")).observe(elapsed.as_secs_f64());
    }

    pub fn first_token(&self, elapsed: Duration) {
        (self.first_token_seconds.lock().expect("metrics lock")).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition, with the queue's depth now.
    pub fn render(&self, queued: usize, slots: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP llm_requests_total HTTP requests by route and status.\n# TYPE llm_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "llm_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "llm_prompt_tokens_total",
                "Prompt tokens of finished requests.",
                &self.prompt_tokens,
            ),
            (
                "llm_completion_tokens_total",
                "Tokens generated.",
                &self.completion_tokens,
            ),
            (
                "llm_cancelled_sequences_total",
                "Sequences stopped because their client left.",
                &self.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "llm_queue_depth",
                "Requests waiting for a batch slot.",
                queued as u64,
            ),
            (
                "llm_running_sequences",
                "Sequences in the engine's batch.",
                self.running.load(Ordering::Relaxed),
            ),
            ("llm_batch_slots", "The engine's batch slots.", slots as u64),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        (self.request_seconds.lock().expect("metrics lock")).write(
            &mut out,
            "llm_request_duration_seconds",
            "Generation requests, arrival to last token.",
        );
        (self.first_token_seconds.lock().expect("metrics lock")).write(
            &mut out,
            "llm_time_to_first_token_seconds",
            "Arrival to the first generated token.",
        );
        out
    }
}
