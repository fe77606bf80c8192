//! [`SimpleTokenizer`]: the word-level tokenizer from chapter 2 of "Build a Large Language
//! Model (From Scratch)", kept for teaching. It shows what BPE fixes: any word not seen in
//! the training text becomes `<|unk|>`.

use std::collections::{BTreeSet, HashMap};

use crate::error::{BpeError, Result};
use crate::special::END_OF_TEXT;

/// The unknown-word token.
pub const UNKNOWN: &str = "<|unk|>";

/// Punctuation that decoding glues to the previous word.
const GLUED: &[char] = &[',', '.', '?', '!', '"', '(', ')', '\''];

/// Splits like Python's `re.split(r'([,.?_!"()\']|--|\s)', text)` followed by stripping each
/// item and dropping the empty ones.
pub fn simple_split(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let len = match c {
            ',' | '.' | '?' | '_' | '!' | '"' | '(' | ')' | '\'' => 1,
            '-' if matches!(chars.peek(), Some((_, '-'))) => {
                chars.next();
                2
            }
            c if c.is_whitespace() => c.len_utf8(),
            _ => continue,
        };
        items.push(&text[start..i]);
        items.push(&text[i..i + len]);
        start = i + len;
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A word-level tokenizer with a vocabulary built from a corpus.
///
/// ```
/// use llm_bpe::SimpleTokenizer;
/// let tok = SimpleTokenizer::from_corpus("the cat sat, the end.");
/// let ids = tok.encode("the dog sat.");
/// assert_eq!(tok.decode(&ids).unwrap(), "the <|unk|> sat.");
/// ```
#[derive(Clone, Debug)]
pub struct SimpleTokenizer {
    /// Id → string; the words sorted, then `<|endoftext|>` and `<|unk|>`.
    vocab: Vec<String>,
    ids: HashMap<String, u32>,
}

impl SimpleTokenizer {
    /// Builds the vocabulary from every distinct word of `corpus`, sorted, plus
    /// `<|endoftext|>` and `<|unk|>`.
    pub fn from_corpus(corpus: &str) -> Self {
        let words: BTreeSet<&str> = simple_split(corpus).into_iter().collect();
        let mut vocab: Vec<String> = words.into_iter().map(str::to_string).collect();
        for special in [END_OF_TEXT, UNKNOWN] {
            if !vocab.iter().any(|w| w == special) {
                vocab.push(special.to_string());
            }
        }
        let ids = vocab
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        SimpleTokenizer { vocab, ids }
    }

    /// Number of entries, the two special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of a word, if it is in the vocabulary.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The id of `<|unk|>`.
    pub fn unk_id(&self) -> u32 {
        self.ids[UNKNOWN]
    }

    /// Encodes text; words not in the vocabulary become `<|unk|>`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let unk = self.unk_id();
        simple_split(text)
            .into_iter()
            .map(|w| self.id(w).unwrap_or(unk))
            .collect()
    }

    /// Encodes text, failing on the first word not in the vocabulary.
    pub fn encode_strict(&self, text: &str) -> Result<Vec<u32>> {
        simple_split(text)
            .into_iter()
            .map(|w| {
                self.id(w).ok_or_else(|| BpeError::UnknownWord {
                    word: w.to_string(),
                })
            })
            .collect()
    }

    /// Joins the words with spaces, without a space before `, . ? ! " ( ) '`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            let word = self.vocab.get(id as usize).ok_or(BpeError::IdOutOfRange {
                id,
                vocab_size: self.vocab.len(),
            })?;
            let glued = word.len() == 1 && word.starts_with(GLUED);
            if !out.is_empty() && !glued {
                out.push(' ');
            }
            out.push_str(word);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_the_python_regex() {
        assert_eq!(
            simple_split("Hello, world. Is this-- a test?"),
            ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
        );
        assert_eq!(
            simple_split("a---b  _x_ \"q\""),
            ["a", "--", "-b", "_", "x", "_", "\"", "q", "\""]
        );
        assert!(simple_split(" \n\t ").is_empty());
    }

    #[test]
    fn unknown_words_and_decode() {
        let tok = SimpleTokenizer::from_corpus("I said, \"yes\" (twice).");
        let ids = tok.encode("I said \"no\" (twice).");
        assert_eq!(ids[3], tok.unk_id());
        // As in the walkthrough, only the space *before* the punctuation goes.
        assert_eq!(tok.decode(&ids).unwrap(), "I said\" <|unk|>\"( twice).");
        assert!(tok.encode_strict("no").is_err());
        assert!(tok.decode(&[999]).is_err());
    }
}
