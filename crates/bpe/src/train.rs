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
use crate::tokenizer::Gpt2Tokenizer;

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

/// Trains a byte-level BPE tokenizer on `texts`.
pub fn train(texts: &[&str], config: &TrainerConfig) -> Result<Gpt2Tokenizer> {
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

    let order = byte_order();
    let mut byte_id = [0u32; 256];
    for (id, &b) in order.iter().enumerate() {
        byte_id[b as usize] = id as u32;
    }
    let mut decoder: Vec<Vec<u8>> = order.iter().map(|&b| vec![b]).collect();
    let mut by_bytes: FxHashMap<Vec<u8>, u32> = decoder
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), i as u32))
        .collect();

    // Sort the words so that training does not depend on hash-map order.
    let mut pieces: Vec<(&str, u64)> = counts.into_iter().collect();
    pieces.sort_unstable();
    let mut words: Vec<Vec<u32>> = pieces
        .iter()
        .map(|(p, _)| p.bytes().map(|b| byte_id[b as usize]).collect())
        .collect();
    let freq: Vec<i64> = pieces.iter().map(|&(_, c)| c as i64).collect();

    let mut pair_count: FxHashMap<u64, i64> = FxHashMap::default();
    let mut pair_words: FxHashMap<u64, FxHashSet<u32>> = FxHashMap::default();
    for (w, word) in words.iter().enumerate() {
        for p in word.windows(2) {
            let k = key(p[0], p[1]);
            *pair_count.entry(k).or_insert(0) += freq[w];
            pair_words.entry(k).or_default().insert(w as u32);
        }
    }
    // Max-heap on count; among equal counts the smallest pair key wins.
    let mut heap: BinaryHeap<(i64, Reverse<u64>)> =
        pair_count.iter().map(|(&k, &c)| (c, Reverse(k))).collect();

    let target = config.vocab_size - n_special;
    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(target.saturating_sub(256));
    let mut changed: FxHashSet<u64> = FxHashSet::default();
    while decoder.len() < target {
        let Some((count, Reverse(k))) = heap.pop() else {
            break;
        };
        let current = pair_count.get(&k).copied().unwrap_or(0);
        if current != count {
            if current > 0 {
                heap.push((current, Reverse(k)));
            }
            continue;
        }
        if (count as u64) < config.min_frequency.max(1) {
            break;
        }
        let (l, r) = ((k >> 32) as u32, k as u32);
        let mut bytes = decoder[l as usize].clone();
        bytes.extend_from_slice(&decoder[r as usize]);
        let new_id = match by_bytes.get(&bytes) {
            Some(&id) => id,
            None => {
                let id = decoder.len() as u32;
                by_bytes.insert(bytes.clone(), id);
                decoder.push(bytes);
                id
            }
        };
        merges.push((l, r));

        let mut affected: Vec<u32> = pair_words
            .remove(&k)
            .unwrap_or_default()
            .into_iter()
            .collect();
        affected.sort_unstable();
        changed.clear();
        for w in affected {
            let word = &mut words[w as usize];
            let f = freq[w as usize];
            for p in word.windows(2) {
                let pk = key(p[0], p[1]);
                *pair_count.get_mut(&pk).expect("counted") -= f;
                changed.insert(pk);
            }
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == l && word[i + 1] == r {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(word[i]);
                    i += 1;
                }
            }
            *word = merged;
            for p in word.windows(2) {
                let pk = key(p[0], p[1]);
                *pair_count.entry(pk).or_insert(0) += f;
                pair_words.entry(pk).or_default().insert(w);
                changed.insert(pk);
            }
        }
        pair_count.remove(&k);
        for &pk in &changed {
            if let Some(&c) = pair_count.get(&pk) {
                if c > 0 {
                    heap.push((c, Reverse(pk)));
                }
            }
        }
        if merges.len().is_multiple_of(1000) {
            tracing::debug!(merges = merges.len(), vocab = decoder.len(), "training BPE");
        }
    }
    if decoder.len() < target {
        tracing::warn!(
            "the corpus supports only {} tokens at min_frequency {}: stopping below vocab_size {}",
            decoder.len() + n_special,
            config.min_frequency,
            config.vocab_size
        );
    }
    Gpt2Tokenizer::from_parts(decoder, merges, &config.special_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_gpt2s() {
        let gpt2 = Gpt2Tokenizer::gpt2();
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
