//! Training a byte-level BPE vocabulary, GPT-2 style.
//!
//! 1. Split the corpus with GPT-2's pre-tokenizer and count each distinct piece.
//! 2. Start from the 256 single bytes (in GPT-2's id order, so byte ids match GPT-2's).
//! 3. Repeatedly merge the most frequent adjacent pair of tokens into a new token, until the
//!    vocabulary reaches the requested size. Each merge becomes a line of `merges.txt`.
//!
//! Pair counts are updated incrementally (only the words containing the merged pair are
//! touched) and the best pair comes from a heap, so training is fast enough for a CLI.
//! Ties go to the pair with the lowest ids, so training is deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::bytes::byte_to_char;
use crate::error::{BpeError, Result};
use crate::pretokenize::{pretokenize, safe_chunks};
use crate::special::END_OF_TEXT;
use crate::tokenizer::Tokenizer;

/// Settings for [`train`].
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// The size of the final vocabulary, special tokens included (at least 256 + specials).
    pub vocab_size: usize,
    /// Pairs seen fewer times than this are never merged; training may then stop early.
    pub min_frequency: u64,
    /// Special tokens, added after the learned tokens. Their text in the corpus is skipped.
    pub special_tokens: Vec<String>,
}

impl TrainerConfig {
    /// A vocabulary of `vocab_size` tokens with `<|endoftext|>` as its only special token.
    pub fn new(vocab_size: usize) -> Self {
        TrainerConfig {
            vocab_size,
            min_frequency: 2,
            special_tokens: vec![END_OF_TEXT.to_string()],
        }
    }
}

/// GPT-2's id order for single bytes: printable bytes first, then the rest.
fn byte_order() -> Vec<u8> {
    let table = byte_to_char();
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.sort_by_key(|&b| table[b as usize]);
    bytes
}

#[inline]
fn key(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}

/// Counts the distinct pre-tokens of the corpus, skipping special-token text.
fn count_pieces<'a>(texts: &[&'a str], specials: &[String]) -> FxHashMap<&'a str, u64> {
    let mut segments: Vec<&'a str> = Vec::new();
    for &text in texts {
        let mut rest = text;
        while let Some((at, len)) = specials
            .iter()
            .filter_map(|s| rest.find(s.as_str()).map(|at| (at, s.len())))
            .min()
        {
            segments.extend(safe_chunks(&rest[..at]));
            rest = &rest[at + len..];
        }
        segments.extend(safe_chunks(rest));
    }
    segments
        .par_iter()
        .fold(FxHashMap::default, |mut counts, seg| {
            for piece in pretokenize(seg) {
                *counts.entry(piece).or_insert(0) += 1;
            }
            counts
        })
        .reduce(FxHashMap::default, |mut a, b| {
            for (k, v) in b {
                *a.entry(k).or_insert(0) += v;
            }
            a
        })
}

/// The vocabulary as it grows: each token's bytes, and the id of each byte string.
struct Vocab {
    decoder: Vec<Vec<u8>>,
    by_bytes: FxHashMap<Vec<u8>, u32>,
}

impl Vocab {
    /// The 256 single bytes in GPT-2's id order, and the id of each byte.
    fn bytes() -> (Self, [u32; 256]) {
        let order = byte_order();
        let mut byte_id = [0u32; 256];
        for (id, &b) in order.iter().enumerate() {
            byte_id[b as usize] = id as u32;
        }
        let decoder: Vec<Vec<u8>> = order.iter().map(|&b| vec![b]).collect();
        let by_bytes = decoder
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i as u32))
            .collect();
        (Vocab { decoder, by_bytes }, byte_id)
    }

    fn len(&self) -> usize {
        self.decoder.len()
    }

    /// The id of token `l` followed by token `r`, added if it is new.
    fn join(&mut self, l: u32, r: u32) -> u32 {
        let mut bytes = self.decoder[l as usize].clone();
        bytes.extend_from_slice(&self.decoder[r as usize]);
        if let Some(&id) = self.by_bytes.get(&bytes) {
            return id;
        }
        let id = self.decoder.len() as u32;
        self.by_bytes.insert(bytes.clone(), id);
        self.decoder.push(bytes);
        id
    }
}

/// The corpus's distinct words as token ids with their counts, and the count of every
/// adjacent pair, kept up to date as pairs merge. A heap holds the candidates for the most
/// frequent pair; stale entries are skipped when popped.
struct Pairs {
    words: Vec<Vec<u32>>,
    freq: Vec<i64>,
    count: FxHashMap<u64, i64>,
    /// The words each pair occurs in.
    words_of: FxHashMap<u64, FxHashSet<u32>>,
    /// Max-heap on count; among equal counts the smallest pair key wins.
    heap: BinaryHeap<(i64, Reverse<u64>)>,
}

impl Pairs {
    fn new(counts: FxHashMap<&str, u64>, byte_id: &[u32; 256]) -> Self {
        // Sort the words so that training does not depend on hash-map order.
        let mut pieces: Vec<(&str, u64)> = counts.into_iter().collect();
        pieces.sort_unstable();
        let words: Vec<Vec<u32>> = pieces
            .iter()
            .map(|(p, _)| p.bytes().map(|b| byte_id[b as usize]).collect())
            .collect();
        let freq: Vec<i64> = pieces.iter().map(|&(_, c)| c as i64).collect();
        let mut count: FxHashMap<u64, i64> = FxHashMap::default();
        let mut words_of: FxHashMap<u64, FxHashSet<u32>> = FxHashMap::default();
        for (w, word) in words.iter().enumerate() {
            for p in word.windows(2) {
                let k = key(p[0], p[1]);
                *count.entry(k).or_insert(0) += freq[w];
                words_of.entry(k).or_default().insert(w as u32);
            }
        }
        let heap = count.iter().map(|(&k, &c)| (c, Reverse(k))).collect();
        Pairs {
            words,
            freq,
            count,
            words_of,
            heap,
        }
    }

    /// The most frequent pair, if it is seen at least `min_frequency` times.
    fn best(&mut self, min_frequency: u64) -> Option<(u32, u32)> {
        while let Some((count, Reverse(k))) = self.heap.pop() {
            let current = self.count.get(&k).copied().unwrap_or(0);
            if current != count {
                if current > 0 {
                    self.heap.push((current, Reverse(k)));
                }
                continue;
            }
            if (count as u64) < min_frequency {
                return None;
            }
            return Some(((k >> 32) as u32, k as u32));
        }
        None
    }

    /// Replaces every `l r` in every word that holds it with `new_id`, and updates the
    /// counts of the pairs around it.
    fn merge(&mut self, l: u32, r: u32, new_id: u32) {
        let k = key(l, r);
        let mut affected: Vec<u32> = self
            .words_of
            .remove(&k)
            .unwrap_or_default()
            .into_iter()
            .collect();
        affected.sort_unstable();
        let mut changed: FxHashSet<u64> = FxHashSet::default();
        for w in affected {
            let word = &mut self.words[w as usize];
            let f = self.freq[w as usize];
            for p in word.windows(2) {
                let pk = key(p[0], p[1]);
                *self.count.get_mut(&pk).expect("counted") -= f;
                changed.insert(pk);
            }
            *word = merged(word, l, r, new_id);
            for p in word.windows(2) {
                let pk = key(p[0], p[1]);
                *self.count.entry(pk).or_insert(0) += f;
                self.words_of.entry(pk).or_default().insert(w);
                changed.insert(pk);
            }
        }
        self.count.remove(&k);
        for &pk in &changed {
            if let Some(&c) = self.count.get(&pk) {
                if c > 0 {
                    self.heap.push((c, Reverse(pk)));
                }
            }
        }
    }
}

/// `word` with every `l r`, left to right, replaced by `new_id`.
fn merged(word: &[u32], l: u32, r: u32, new_id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && word[i] == l && word[i + 1] == r {
            out.push(new_id);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    out
}

/// Trains a byte-level BPE tokenizer on `texts`.
pub fn train(texts: &[&str], config: &TrainerConfig) -> Result<Tokenizer> {
    let n_special = config.special_tokens.len();
    if config.vocab_size < 256 + n_special {
        return Err(BpeError::Train(format!(
            "vocab_size {} is below the 256 byte tokens plus {} special token(s)",
            config.vocab_size, n_special
        )));
    }
    let counts = count_pieces(texts, &config.special_tokens);
    if counts.is_empty() {
        return Err(BpeError::Train("the corpus is empty".into()));
    }
    let (mut vocab, byte_id) = Vocab::bytes();
    let mut pairs = Pairs::new(counts, &byte_id);
    let target = config.vocab_size - n_special;
    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(target.saturating_sub(256));
    while vocab.len() < target {
        let Some((l, r)) = pairs.best(config.min_frequency.max(1)) else {
            break;
        };
        let new_id = vocab.join(l, r);
        merges.push((l, r));
        pairs.merge(l, r, new_id);
        if merges.len().is_multiple_of(1000) {
            tracing::debug!(merges = merges.len(), vocab = vocab.len(), "training BPE");
        }
    }
    if vocab.len() < target {
        tracing::warn!(
            "the corpus supports only {} tokens at min_frequency {}: stopping below vocab_size {}",
            vocab.len() + n_special,
            config.min_frequency,
            config.vocab_size
        );
    }
    Tokenizer::from_parts(vocab.decoder, merges, &config.special_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_gpt2s() {
        let gpt2 = Tokenizer::gpt2();
        for (id, b) in byte_order().into_iter().enumerate() {
            assert_eq!(gpt2.token_bytes(id as u32).unwrap(), [b]);
        }
    }

    #[test]
    fn learns_the_most_frequent_pairs_first() {
        let tok = train(&["aaa aaa aaa bb bb"], &TrainerConfig::new(256 + 3 + 1)).unwrap();
        assert_eq!(tok.vocab_size(), 260);
        // " aaa" ×2 and "aaa" ×1: "aa" (in 3 words) is the most frequent pair.
        assert_eq!(tok.token_bytes(256).unwrap(), b"aa");
        assert_eq!(tok.eot_id(), Some(259));
        assert_eq!(
            tok.decode(&tok.encode("aaa bb").unwrap()).unwrap(),
            "aaa bb"
        );
    }

    #[test]
    fn rejects_impossible_requests() {
        assert!(train(&["abc"], &TrainerConfig::new(100)).is_err());
        assert!(train(&[""], &TrainerConfig::new(300)).is_err());
    }
}
