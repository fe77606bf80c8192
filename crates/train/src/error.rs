//! The training crate's error type.

use std::path::PathBuf;

/// Errors from configuring, running and resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A recipe or override that cannot be used; the message names the key.
    #[error("config error: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The run directory cannot be created or written.
    #[error("run directory {} is not writable: {source}", path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Resuming is impossible (nothing to resume, or the model changed).
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The loss or gradient norm stopped being a finite number.
    #[error(
        "training diverged at step {step}: {what} is {value}. {} Try a lower learning rate (optimizer.lr) or more warmup (schedule.warmup_steps).",
        match checkpoint { Some(p) => format!("The last good checkpoint is {}.", p.display()), None => "No checkpoint was saved yet.".to_string() }
    )]
    Diverged {
        step: usize,
        what: &'static str,
        value: f64,
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

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
