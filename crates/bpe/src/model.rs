//! The byte-pair model: a vocabulary (bytes ↔ id) and ranked merges, and the merge loop
//! that turns one pre-token into ids.
//!
//! This is OpenAI's `encoder.py` algorithm: start from one token per byte, then repeatedly
//! merge the adjacent pair whose merge rule comes first in `merges.txt` (leftmost first on a
//! tie), until no pair has a rule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

/// Pieces longer than this use the heap-based merge, O(n log n) instead of O(n²).
const LONG_PIECE: usize = 96;

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A byte-level BPE vocabulary with its merge rules.
#[derive(Clone)]
pub(crate) struct BpeModel {
    /// Token bytes → id, for every ordinary (non-special) token.
    encoder: FxHashMap<Vec<u8>, u32>,
    /// Id → token bytes, for every id including special tokens.
    decoder: Vec<Vec<u8>>,
    /// `(left, right)` → `(rank, merged id)`.
    merges: FxHashMap<u64, (u32, u32)>,
    /// The merges in rank order, for saving.
    merge_list: Vec<(u32, u32)>,
    /// The id of each single byte.
    byte_ids: [u32; 256],
    /// Tokens the merge rules do not rebuild from their own bytes: a whole pre-token equal
    /// to one of these must still go through the merge loop.
    non_canonical: FxHashSet<u32>,
}

impl BpeModel {
    /// Builds the model from every token's bytes (`decoder[id]`), the ids of the special
    /// tokens (never produced by [`Self::encode_piece`]), and the merge rules as pairs of
    /// ids in rank order.
    pub(crate) fn new(
        decoder: Vec<Vec<u8>>,
        specials: &[u32],
        merge_list: Vec<(u32, u32)>,
    ) -> Result<Self, String> {
        let mut encoder = FxHashMap::with_capacity_and_hasher(decoder.len(), Default::default());
        for (id, bytes) in decoder.iter().enumerate() {
            if specials.contains(&(id as u32)) {
                continue;
            }
            if let Some(first) = encoder.insert(bytes.clone(), id as u32) {
                return Err(format!(
                    "ids {first} and {id} are the same token {:?}",
                    String::from_utf8_lossy(bytes)
                ));
            }
        }
        let mut byte_ids = [u32::MAX; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *encoder
                .get(&[b][..])
                .ok_or_else(|| format!("the vocabulary lacks the single byte {b:#04x}"))?;
        }
        let mut merges = FxHashMap::with_capacity_and_hasher(merge_list.len(), Default::default());
        for (rank, &(left, right)) in merge_list.iter().enumerate() {
            let mut merged = decoder[left as usize].clone();
            merged.extend_from_slice(&decoder[right as usize]);
            let id = *encoder.get(&merged).ok_or_else(|| {
                format!(
                    "merge {} ({:?} + {:?}) makes a token that is not in the vocabulary",
                    rank + 1,
                    String::from_utf8_lossy(&decoder[left as usize]),
                    String::from_utf8_lossy(&decoder[right as usize]),
                )
            })?;
            // Keep the first rule for a pair, as `encoder.py` does with its rank dictionary.
            merges
                .entry(pair_key(left, right))
                .or_insert((rank as u32, id));
        }
        let mut model = BpeModel {
            encoder,
            decoder,
            merges,
            merge_list,
            byte_ids,
            non_canonical: FxHashSet::default(),
        };
        model.non_canonical = model.find_non_canonical();
        Ok(model)
    }

    /// Tokens whose own bytes do not merge back into them. For GPT-2 this set is empty, which
    /// makes the whole-piece lookup in [`Self::encode_piece`] exact; other vocabularies may
    /// differ, and then those tokens take the slow path.
    fn find_non_canonical(&self) -> FxHashSet<u32> {
        let mut out = FxHashSet::default();
        let mut buf = Vec::new();
        for (id, bytes) in self.decoder.iter().enumerate() {
            if bytes.len() < 2 || self.encoder.get(bytes) != Some(&(id as u32)) {
                continue;
            }
            buf.clear();
            self.merge_bytes(bytes, &mut buf);
            if buf.as_slice() != [id as u32] {
                out.insert(id as u32);
            }
        }
        out
    }

    /// Number of ids, special tokens included.
    pub(crate) fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    pub(crate) fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.decoder.get(id as usize).map(Vec::as_slice)
    }

    pub(crate) fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.encoder.get(bytes).copied()
    }

    pub(crate) fn merge_list(&self) -> &[(u32, u32)] {
        &self.merge_list
    }

    pub(crate) fn non_canonical_count(&self) -> usize {
        self.non_canonical.len()
    }

    /// Encodes one pre-token, appending its ids to `out`.
    #[inline]
    pub(crate) fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&id) = self.encoder.get(piece) {
            if !self.non_canonical.contains(&id) {
                out.push(id);
                return;
            }
        }
        self.merge_bytes(piece, out);
    }

    #[inline]
    fn rule(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(left, right)).copied()
    }

    /// The merge loop proper, with no whole-piece shortcut.
    fn merge_bytes(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= LONG_PIECE => self.merge_short(piece, out),
            _ => self.merge_long(piece, out),
        }
    }

    /// O(n²) merge on a small vector: fastest for ordinary words.
    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut parts: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        // ranks[i] is the rule for (parts[i], parts[i + 1]).
        let mut rules: Vec<Option<(u32, u32)>> =
            parts.windows(2).map(|w| self.rule(w[0], w[1])).collect();
        loop {
            let best = rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|(rank, id)| (rank, i, id)))
                .min();
            let Some((_, i, merged)) = best else { break };
            parts[i] = merged;
            parts.remove(i + 1);
            rules.remove(i);
            if i > 0 {
                rules[i - 1] = self.rule(parts[i - 1], merged);
            }
            if i < rules.len() {
                rules[i] = self.rule(merged, parts[i + 1]);
            }
        }
        out.extend_from_slice(&parts);
    }

    /// O(n log n) merge with a doubly linked list and a heap, for long pieces such as
    /// runs of whitespace or digits.
    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = piece.len();
        let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut alive = vec![true; n];
        // (rank, position, left id, right id): the heap pops the lowest rank, leftmost first.
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.rule(ids[i], ids[i + 1]) {
                heap.push(Reverse((rank, i, ids[i], ids[i + 1])));
            }
        }
        while let Some(Reverse((_, i, left, right))) = heap.pop() {
            let j = next[i];
            // Skip entries made stale by an earlier merge.
            if !alive[i] || j == NONE || ids[i] != left || ids[j] != right {
                continue;
            }
            let (_, merged) = self.rule(left, right).expect("rule existed when pushed");
            ids[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
            }
            let p = prev[i];
            if p != NONE {
                if let Some((rank, _)) = self.rule(ids[p], merged) {
                    heap.push(Reverse((rank, p, ids[p], merged)));
                }
            }
            let q = next[i];
            if q != NONE {
                if let Some((rank, _)) = self.rule(merged, ids[q]) {
                    heap.push(Reverse((rank, i, merged, ids[q])));
                }
            }
        }
        let mut i = 0;
        while i != NONE {
            out.push(ids[i]);
            i = next[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: the 256 bytes, then "ab", "abc", "bc".
    fn toy(merges: &[(&str, &str)]) -> BpeModel {
        let mut decoder: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut merge_list = Vec::new();
        for (l, r) in merges {
            let lid = decoder.iter().position(|t| t == l.as_bytes()).unwrap() as u32;
            let rid = decoder.iter().position(|t| t == r.as_bytes()).unwrap() as u32;
            let merged = format!("{l}{r}").into_bytes();
            if !decoder.contains(&merged) {
                decoder.push(merged);
            }
            merge_list.push((lid, rid));
        }
        BpeModel::new(decoder, &[], merge_list).unwrap()
    }

    fn enc(m: &BpeModel, s: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        m.encode_piece(s.as_bytes(), &mut out);
        out.iter()
            .map(|&id| m.token_bytes(id).unwrap().to_vec())
            .collect()
    }

    #[test]
    fn lowest_rank_merges_first() {
        let m = toy(&[("b", "c"), ("a", "b"), ("a", "bc")]);
        assert_eq!(enc(&m, "abc"), [b"abc".to_vec()]);
        assert_eq!(enc(&m, "abab"), [b"ab".to_vec(), b"ab".to_vec()]);
    }

    #[test]
    fn non_canonical_tokens_take_the_slow_path() {
        // "abc" exists only through ("ab", "c"), but ("b", "c") ranks first.
        let m = toy(&[("a", "b"), ("b", "c"), ("ab", "c")]);
        let m2 = toy(&[("b", "c"), ("a", "b"), ("ab", "c")]);
        assert_eq!(m.non_canonical_count(), 0);
        assert_eq!(enc(&m, "abc"), [b"abc".to_vec()]);
        assert_eq!(m2.non_canonical_count(), 1);
        assert_eq!(enc(&m2, "abc"), [b"a".to_vec(), b"bc".to_vec()]);
    }

    #[test]
    fn long_and_short_paths_agree() {
        let m = toy(&[
            ("a", "a"),
            ("aa", "a"),
            ("aa", "aa"),
            ("b", "a"),
            ("ba", "a"),
        ]);
        for len in [1, 2, 3, 5, 17, 97, 150, 301] {
            let s: String = (0..len)
                .map(|i| if i % 7 == 3 { 'b' } else { 'a' })
                .collect();
            let (mut short, mut long) = (Vec::new(), Vec::new());
            m.merge_short(s.as_bytes(), &mut short);
            if len > 1 {
                m.merge_long(s.as_bytes(), &mut long);
            } else {
                long = short.clone();
            }
            assert_eq!(short, long, "length {len}");
        }
    }
}
