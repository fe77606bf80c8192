//! The model crate's error type: every variant names the file, tensor, key or value at fault.

use std::path::PathBuf;

/// Errors from building, loading, saving and running a GPT-2.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration that cannot describe a GPT-2.
    #[error("invalid config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is malformed (truncated, corrupt, wrong format).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A checkpoint whose bytes are damaged: truncated, or a section (or the header) whose
    /// SHA-256 does not match the one recorded when it was written.
    #[error("{}: corrupt checkpoint: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    /// Weights holding NaN or infinity: a model that diverged cannot be saved or used.
    #[error(
        "{}the weights are not finite: tensor {tensor} holds NaN or infinity (the model diverged; use an earlier checkpoint)",
        path.as_ref().map_or(String::new(), |p| format!("{}: ", p.display()))
    )]
    NonFinite {
        path: Option<PathBuf>,
        tensor: String,
    },
    /// A tensor the model needs is not in the weights.
    #[error("{}: missing tensor {name:?}", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape for the config.
    #[error("{}: tensor {name:?} has shape {found:?}, but the config expects {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The weights hold tensors that are not part of a GPT-2.
    #[error("{}: unexpected tensors {names:?}", path.display())]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    /// A sequence longer than the model's context.
    #[error(
        "{len} positions do not fit the model's context of n_positions = {n_positions} tokens"
    )]
    ContextOverflow { len: usize, n_positions: usize },
    /// A generation parameter out of its range, by name (`temperature`, `top_p`, …).
    #[error("{param} {message}")]
    Param {
        param: &'static str,
        message: String,
    },
    /// Bad input to a model call (empty prompt, bad batch shape…).
    #[error("{0}")]
    Input(String),
    /// A model id that cannot be resolved from the hub or its cache.
    #[error("{0}")]
    Hub(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
