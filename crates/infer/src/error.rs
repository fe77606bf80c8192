//! What can go wrong in generation; every error names the value at fault.

/// An error of the engine.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{param} {message}")]
    Param {
        param: &'static str,
        message: String,
    },
    #[error("token id {id} is outside the model's vocabulary of {vocab_size}")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    #[error("the prompt has {len} tokens and the model's context holds {n_positions}: shorten it or ask for left truncation")]
    PromptTooLong { len: usize, n_positions: usize },
    #[error("every one of the {slots} batch slots is busy")]
    Full { slots: usize },
    #[error(
        "the model's logits are not finite for sequence {id}: its weights or activations overflow"
    )]
    NonFinite { id: u64 },
    #[error("{0}")]
    Weights(String),
    /// Finding or loading a model or its tokenizer.
    #[error("{0}")]
    Load(String),
    #[error(transparent)]
    Model(llm_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] llm_bpe::BpeError),
}

impl From<llm_model::ModelError> for InferError {
    /// A parameter error stays a parameter error (sampling's checks live in `llm-model`).
    fn from(e: llm_model::ModelError) -> Self {
        match e {
            llm_model::ModelError::Param { param, message } => InferError::Param { param, message },
            e => InferError::Model(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, InferError>;
