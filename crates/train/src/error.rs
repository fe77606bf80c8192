//! The training crate's error type.

use std::path::PathBuf;

/// Errors from configuring, running and resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A recipe or override that cannot be used, not tied to one key.
    #[error("config error: {0}")]
    Config(String),
    /// A recipe value that cannot be used: the key (`optimizer.lr`), what is wrong, and
    /// where the value came from (the recipe file, or `--set key=value`) once known.
    #[error("config error: {}`{key}`: {message}", origin.as_ref().map_or(String::new(), |o| format!("{o}: ")))]
    Key {
        key: String,
        message: String,
        origin: Option<String>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The run directory cannot be created, written or locked.
    #[error("run directory {}: {source}", path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A fresh start in a directory that holds a run with a complete checkpoint.
    #[error(
        "{} already holds a run (checkpoint {}, step {step}): continue it with `--resume {}`, or choose another --name or --out (or delete the directory)",
        dir.display(), checkpoint.display(), dir.display()
    )]
    RunExists {
        dir: PathBuf,
        checkpoint: PathBuf,
        step: usize,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Resuming is impossible (the model or the batch shape changed).
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The loss, the gradient norm, the validation loss or a weight stopped being finite.
    /// Nothing was saved from the diverged model.
    #[error(
        "training diverged at step {step}: {what}. {} Try a lower learning rate (optimizer.lr) or more warmup (schedule.warmup_steps).",
        last_good(checkpoint)
    )]
    Diverged {
        step: usize,
        /// What went wrong: `the loss is NaN`, `weight h.0.attn.c_attn.weight holds NaN or
        /// infinity`, …
        what: String,
        checkpoint: Option<PathBuf>,
    },
    /// The spike guard (`guard.action = "stop"`) saw an outlier.
    #[error(
        "stopped at step {step} by the spike guard: {what} {value:.4} is {z:.1} standard deviations above the mean of the last {window} steps ({mean:.4}). {}",
        last_good(checkpoint)
    )]
    Spike {
        step: usize,
        what: &'static str,
        value: f64,
        z: f64,
        mean: f64,
        window: usize,
        checkpoint: Option<PathBuf>,
    },
    /// Data-parallel training across devices failed.
    #[error("data-parallel training: {0}")]
    Parallel(String),
    #[error(transparent)]
    Data(#[from] llm_data::DataError),
    #[error(transparent)]
    Model(#[from] llm_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] llm_bpe::BpeError),
}

fn last_good(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(p) => format!("The last good checkpoint is {}.", p.display()),
        None => "No checkpoint was saved yet.".to_string(),
    }
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A bad value at `key`.
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        TrainError::Key {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
