use std::path::{Path, PathBuf};

/// What can go wrong looking inside a model or a run. Every message names the input at
/// fault: the parameter and its valid range, the file and line, or the tensor's shape.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// A bad argument: a layer or head out of range, text too long for the context.
    #[error("{0}")]
    Input(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A run directory without usable metrics.
    #[error("{}: {message}", path.display())]
    Metrics { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] llm_model::ModelError),
    #[error("drawing {what}: {message}")]
    Draw { what: String, message: String },
}

impl VizError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        VizError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn draw(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        VizError::Draw {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = VizError> = std::result::Result<T, E>;
