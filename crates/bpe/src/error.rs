//! The one error type of the crate. Every variant names what went wrong: the file, the id or the text.

use std::path::PathBuf;

/// Errors from loading, encoding, decoding and training tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A vocabulary, merges or tokenizer.json file is malformed.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// A directory holds neither `vocab.json` + `merges.txt` nor `tokenizer.json`.
    #[error("{}: no tokenizer found (expected vocab.json + merges.txt, or tokenizer.json)", dir.display())]
    NotFound { dir: PathBuf },
    /// `decode` was given an id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// The text holds a special token that the chosen policy does not allow (the API's
    /// [`crate::Allowed::All`] accepts it; [`crate::Allowed::AsText`] encodes it as text).
    #[error(
        "the text contains the special token {token:?} at byte {offset}, and special-token \
         text is not allowed here"
    )]
    DisallowedSpecial { token: String, offset: usize },
    /// A special token name passed by the caller is not in the vocabulary.
    #[error("{token:?} is not a special token of this tokenizer")]
    UnknownSpecial { token: String },
    /// A word given to [`crate::SimpleTokenizer`] is not in its vocabulary and there is no `<|unk|>`.
    #[error("unknown word {word:?}")]
    UnknownWord { word: String },
    /// Training was asked for something impossible.
    #[error("cannot train: {0}")]
    Train(String),
}

impl BpeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BpeError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        BpeError::Corrupt {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, BpeError>;
