//! The data crate's error type: every variant names the file, line, byte or token at fault.

use std::path::PathBuf;

/// Errors from reading corpora, preparing and reading shards, and building datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A text file that is not UTF-8.
    #[error("{}: not valid UTF-8 at byte {offset}", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    /// A bad line in a JSON-lines file.
    #[error("{}: line {line}: {message}", path.display())]
    Jsonl {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A malformed file: a shard, a manifest, a dataset.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A token id the tokenizer does not have.
    #[error("{}: token id {id} at position {position} is out of range for a vocabulary of {vocab_size}", path.display())]
    TokenOutOfRange {
        path: PathBuf,
        id: u32,
        position: u64,
        vocab_size: usize,
    },
    /// Not enough data for what was asked.
    #[error("{0}")]
    TooSmall(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tokenizer(#[from] llm_bpe::BpeError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DataError>;
