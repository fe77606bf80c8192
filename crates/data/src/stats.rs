//! Corpus statistics for `cargo xtask data-stats`.

/// Counts of a token stream.
#[derive(Clone, Debug)]
pub struct TokenStats {
    pub tokens: usize,
    pub unique: usize,
    pub vocab_size: usize,
    /// `(id, count)`, most frequent first (ties by id).
    pub top: Vec<(u32, usize)>,
}

impl TokenStats {
    /// Counts `tokens` from a vocabulary of `vocab_size`, keeping the `top_k` most frequent.
    pub fn compute(tokens: &[u32], vocab_size: usize, top_k: usize) -> Self {
        let mut counts =
            vec![0usize; vocab_size.max(tokens.iter().map(|&t| t as usize + 1).max().unwrap_or(0))];
        for &t in tokens {
            counts[t as usize] += 1;
        }
        let unique = counts.iter().filter(|&&c| c > 0).count();
        let mut top: Vec<(u32, usize)> = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u32, c))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(top_k);
        TokenStats {
            tokens: tokens.len(),
            unique,
            vocab_size,
            top,
        }
    }

    /// Share of the vocabulary that occurs at least once.
    pub fn coverage(&self) -> f64 {
        self.unique as f64 / self.vocab_size.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_coverage() {
        let s = TokenStats::compute(&[5, 1, 5, 2, 5, 1], 10, 2);
        assert_eq!((s.tokens, s.unique), (6, 3));
        assert_eq!(s.top, [(5, 3), (1, 2)]);
        assert!((s.coverage() - 0.3).abs() < 1e-12);
    }
}
