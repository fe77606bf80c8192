//! Tokenizers that are not GPT-2's byte-level BPE — SentencePiece-style BPE with byte
//! fallback (Llama, Mistral, TinyLlama), WordPiece, Unigram — run by Hugging Face's
//! `tokenizers` crate from their `tokenizer.json`.
//!
//! What llm-e2e needs beyond ids is each token's bytes (for streaming text and byte-level
//! decoding): `<0x0A>` is the byte 0x0A, `▁` is a space (SentencePiece's Metaspace), and a
//! byte-level vocabulary's tokens are mapped back as GPT-2's are.

use std::collections::HashMap;
use std::path::Path;

use crate::bytes::token_str_to_bytes;
use crate::error::{BpeError, Result};
use crate::special::SpecialToken;

/// A `tokenizers::Tokenizer` and the bytes of each of its tokens.
#[derive(Clone)]
pub(crate) struct HfTokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    /// Token id → its bytes.
    bytes: Vec<Vec<u8>>,
    /// Bytes → the ordinary token with exactly those bytes.
    ids: HashMap<Vec<u8>, u32>,
}

impl HfTokenizer {
    /// Loads `tokenizer.json`; returns it with its special tokens.
    pub(crate) fn from_file(path: &Path) -> Result<(Self, Vec<SpecialToken>)> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            BpeError::corrupt(path, format!("the tokenizers crate cannot load it: {e}"))
        })?;
        let n = inner.get_vocab_size(true);
        let byte_level = format!("{:?}", inner.get_decoder()).contains("ByteLevel");
        let added = inner.get_added_tokens_decoder();
        let mut bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let token = inner.id_to_token(id).ok_or_else(|| {
                BpeError::corrupt(
                    path,
                    format!("ids are not contiguous: no token has id {id} (vocabulary of {n})"),
                )
            })?;
            let b = match added.get(&id) {
                Some(t) => t.content.clone().into_bytes(),
                None => token_bytes(&token, byte_level),
            };
            bytes.push(b);
        }
        let specials: Vec<SpecialToken> = (added.iter())
            .filter(|(_, t)| t.special)
            .map(|(&id, t)| SpecialToken {
                text: t.content.clone(),
                id,
            })
            .collect();
        let ids = (bytes.iter().enumerate())
            .filter(|(id, _)| !added.contains_key(&(*id as u32)))
            .map(|(id, b)| (b.clone(), id as u32))
            .collect();
        Ok((HfTokenizer { inner, bytes, ids }, specials))
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    pub(crate) fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.ids.get(bytes).copied()
    }

    /// The ids of `text`, with the tokenizer's own special tokens (a Llama's `<s>`) when
    /// `with_specials`.
    pub(crate) fn encode(&self, text: &str, with_specials: bool) -> Vec<u32> {
        match self.inner.encode(text, with_specials) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            // Encoding fails only on a model that cannot represent a character at all
            // (no unknown token, no byte fallback): such a tokenizer drops it.
            Err(_) => text
                .chars()
                .flat_map(|c| {
                    self.inner
                        .encode(c.to_string(), false)
                        .map(|e| e.get_ids().to_vec())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }

    /// The text of `ids` as the tokenizer's decoder makes it (a Llama's drops the space it
    /// put before the first word).
    pub(crate) fn decode(&self, ids: &[u32]) -> Option<String> {
        self.inner.decode(ids, false).ok()
    }

    /// The `tokenizer.json` text.
    pub(crate) fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| BpeError::Train(format!("serialising the tokenizer: {e}")))
    }
}

/// The bytes a vocabulary entry stands for.
fn token_bytes(token: &str, byte_level: bool) -> Vec<u8> {
    if byte_level {
        if let Some(b) = token_str_to_bytes(token) {
            return b;
        }
    }
    if let Some(hex) = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            if hex.len() == 2 {
                return vec![b];
            }
        }
    }
    token.replace('▁', " ").into_bytes()
}

/// The end-of-sequence token a model directory's `tokenizer_config.json` names, if any.
pub(crate) fn eos_from_config(tokenizer_json: &Path) -> Option<String> {
    let dir = tokenizer_json.parent()?;
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match &v["eos_token"] {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other["content"].as_str().map(str::to_string),
    }
}
