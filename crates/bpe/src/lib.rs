//! # llm-bpe: tokenizers for llm-e2e
//!
//! Text in, token ids out, and back. The first layer of the stack above `llm-common` (file
//! helpers); it depends on no other llm-e2e crate.
//!
//! - [`Tokenizer`]: OpenAI's GPT-2 byte-level BPE, id for id what `tiktoken`'s `gpt2`
//!   encoding gives. Built in ([`Tokenizer::gpt2`]) or loaded from `vocab.json` +
//!   `merges.txt` or a Hugging Face `tokenizer.json`. Any other `tokenizer.json` (a Llama's
//!   SentencePiece-style BPE with byte fallback, WordPiece, Unigram) loads too, run by
//!   Hugging Face's `tokenizers` crate.
//!   - [`Allowed`]: tiktoken's special-token policy; special-token text is an error unless
//!     allowed.
//!   - [`StreamDecoder`]: token-by-token decoding that never splits a character.
//!   - [`Tokenizer::encode_batch`] / [`Tokenizer::encode_parallel`]: all cores.
//! - [`train`]: learn a byte-level BPE vocabulary of any size from a corpus, saved as
//!   `tokenizer.json` ([`Tokenizer::save_tokenizer_json`]).
//! - [`chat`]: chat templates (the Alpaca format instruction tuning uses, and a plain
//!   transcript), as Hugging Face keeps `apply_chat_template` with the tokenizer.
//! - [`SimpleTokenizer`]: the word-level tokenizer of the "LLMs from scratch" walkthrough,
//!   for teaching.
//!
//! ## How GPT-2 tokenizes
//!
//! 1. [`pretokenize`] splits text into words, numbers, punctuation runs and whitespace with
//!    GPT-2's regex, so that merges never cross a word boundary.
//! 2. Each piece is taken as UTF-8 bytes; every byte is a token of its own (so any text can
//!    be encoded and there is no unknown token).
//! 3. The merge rules (`merges.txt`, learned by [`train`]) are applied lowest rank first
//!    until none applies; the remaining tokens are the ids.
//!
//! ```
//! use llm_bpe::{Allowed, Tokenizer};
//! let tok = Tokenizer::gpt2();
//! assert_eq!(tok.encode("Every effort moves you").unwrap(), [6109, 3626, 6100, 345]);
//! assert!(tok.encode("a<|endoftext|>b").is_err());
//! assert_eq!(tok.encode_with("a<|endoftext|>b", Allowed::All).unwrap(), [64, 50256, 65]);
//! ```

mod bytes;
pub mod chat;
mod error;
mod hf;
mod model;
mod pretokenize;
mod simple;
mod special;
mod stream;
mod tokenizer;
pub mod train;

pub use bytes::{bytes_to_token_str, token_str_to_bytes};
pub use error::{BpeError, Result};
pub use pretokenize::{pretokenize, Pretokens, GPT2_PATTERN};
pub use simple::{simple_split, SimpleTokenizer, UNKNOWN};
pub use special::{Allowed, SpecialToken, END_OF_TEXT, END_OF_TEXT_ID};
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
pub use train::{train, TrainerConfig};
