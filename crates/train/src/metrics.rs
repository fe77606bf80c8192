//! Experiment tracking: `metrics.jsonl`, TensorBoard scalars and `samples.txt`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::run::RunDir;
use crate::tensorboard::EventWriter;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Optimizer steps done.
    pub step: usize,
    /// Mean training loss of the step.
    pub loss: f64,
    /// Mean validation loss, on evaluation steps.
    pub val_loss: Option<f64>,
    pub lr: f64,
    /// Gradient L2 norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Seconds since the run (or this session of it) started.
    pub elapsed: f64,
    /// The spike guard dropped this step's update.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// A task's own measures on evaluation steps (`val_accuracy`, `val_reward_margin`, …).
    #[serde(default, flatten)]
    pub extra: std::collections::BTreeMap<String, f64>,
}

/// Rewrites `path` (if it exists) as `keep(its text)`, atomically.
fn rewrite(path: &Path, keep: impl FnOnce(&str) -> String) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    llm_common::fs::atomic_write(path, keep(&text).as_bytes()).map_err(|e| TrainError::io(path, e))
}

const SAMPLE_HEADER: &str = "===== step ";

/// The samples of `samples.txt` up to `step` (each starts with `===== step N =====`).
fn samples_up_to(text: &str, step: usize) -> String {
    let mut out = String::new();
    let mut keep = true;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(SAMPLE_HEADER) {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            keep = n.is_some_and(|n| n <= step);
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// Writes metrics to the run directory as they come.
pub struct MetricsLog {
    jsonl: PathBuf,
    samples: PathBuf,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens the logs of a run. When resuming from `step`, what the interrupted session
    /// logged after it (metrics lines, samples) is dropped, so every step appears once; a
    /// fresh start begins new files.
    pub fn open(run: &RunDir, resume_step: Option<usize>) -> Result<Self> {
        let jsonl = run.metrics_path();
        let samples = run.samples_path();
        match resume_step {
            Some(step) => {
                rewrite(&jsonl, |text| {
                    text.lines()
                        .filter(|l| {
                            serde_json::from_str::<Metrics>(l).is_ok_and(|m| m.step <= step)
                        })
                        .map(|l| format!("{l}\n"))
                        .collect()
                })?;
                rewrite(&samples, |text| samples_up_to(text, step))?;
            }
            None => {
                for path in [&jsonl, &samples] {
                    if path.exists() {
                        std::fs::remove_file(path).map_err(|e| TrainError::io(path, e))?;
                    }
                }
            }
        }
        let mut events =
            EventWriter::create(run.root()).map_err(|e| TrainError::io(run.root(), e))?;
        if let Some(step) = resume_step {
            events
                .session_start(step as i64)
                .map_err(|e| TrainError::io(events.path().to_path_buf(), e))?;
        }
        Ok(MetricsLog {
            jsonl,
            samples,
            events,
        })
    }

    pub fn log(&mut self, m: &Metrics) -> Result<()> {
        let line = serde_json::to_string(m).expect("metrics serialise") + "\n";
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.jsonl)
            .map_err(|e| TrainError::io(&self.jsonl, e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| TrainError::io(&self.jsonl, e))?;
        let step = m.step as i64;
        let path = self.events.path().to_path_buf();
        let tb = |e| TrainError::io(&path, e);
        self.events
            .scalar("train/loss", step, m.loss as f32)
            .map_err(tb)?;
        self.events
            .scalar("train/lr", step, m.lr as f32)
            .map_err(tb)?;
        self.events
            .scalar("train/grad_norm", step, m.grad_norm as f32)
            .map_err(tb)?;
        self.events
            .scalar("train/tokens_per_s", step, m.tokens_per_s as f32)
            .map_err(tb)?;
        if m.skipped {
            self.events.scalar("train/skipped", step, 1.0).map_err(tb)?;
        }
        if let Some(v) = m.val_loss {
            self.events.scalar("val/loss", step, v as f32).map_err(tb)?;
            self.events
                .scalar("val/perplexity", step, v.exp() as f32)
                .map_err(tb)?;
        }
        for (name, v) in &m.extra {
            // `val_accuracy` → `val/accuracy`, `train_accuracy` → `train/accuracy`.
            let tag = name.replacen('_', "/", 1);
            self.events.scalar(&tag, step, *v as f32).map_err(tb)?;
        }
        self.events.flush().map_err(tb)
    }

    /// Appends a generated sample to `samples.txt`.
    pub fn sample(&mut self, step: usize, text: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.samples)
            .map_err(|e| TrainError::io(&self.samples, e))?;
        writeln!(f, "{SAMPLE_HEADER}{step} =====\n{text}\n")
            .map_err(|e| TrainError::io(&self.samples, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_after_the_resumed_step_are_dropped() {
        let text = "===== step 2 =====\nab\n\n===== step 4 =====\ncd\n===== x\n\n===== step 6 =====\nef\n\n";
        assert_eq!(
            samples_up_to(text, 4),
            "===== step 2 =====\nab\n\n===== step 4 =====\ncd\n===== x\n\n"
        );
        assert_eq!(samples_up_to(text, 1), "");
    }
}
