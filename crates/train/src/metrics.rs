//! Experiment tracking: `metrics.jsonl`, TensorBoard scalars and `samples.txt`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

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
}

/// Writes metrics to the run directory as they come.
pub struct MetricsLog {
    jsonl: PathBuf,
    samples: PathBuf,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens the logs of a run. When resuming from `step`, lines logged after it by the
    /// interrupted session are dropped, so every step appears once.
    pub fn open(run: &RunDir, resume_step: Option<usize>) -> Result<Self> {
        let jsonl = run.metrics_path();
        if let Some(step) = resume_step {
            if jsonl.exists() {
                let text =
                    std::fs::read_to_string(&jsonl).map_err(|e| TrainError::io(&jsonl, e))?;
                let kept: String = text
                    .lines()
                    .filter(|l| serde_json::from_str::<Metrics>(l).is_ok_and(|m| m.step <= step))
                    .map(|l| format!("{l}\n"))
                    .collect();
                llm_common::fs::atomic_write(&jsonl, kept.as_bytes())
                    .map_err(|e| TrainError::io(&jsonl, e))?;
            }
        } else if jsonl.exists() {
            std::fs::remove_file(&jsonl).map_err(|e| TrainError::io(&jsonl, e))?;
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
            samples: run.samples_path(),
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
        self.events.flush().map_err(tb)
    }

    /// Appends a generated sample to `samples.txt`.
    pub fn sample(&mut self, step: usize, text: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.samples)
            .map_err(|e| TrainError::io(&self.samples, e))?;
        writeln!(f, "===== step {step} =====\n{text}\n")
            .map_err(|e| TrainError::io(&self.samples, e))
    }
}
