//! Train / validation / test splits.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Splits a token stream: the first `1 − val_fraction` for training, the rest for
/// validation (nanoGPT's split). Both parts are non-empty unless the fraction is 0 or 1.
pub fn split_tokens(tokens: &[u32], val_fraction: f64) -> Result<(&[u32], &[u32])> {
    check_fraction(val_fraction)?;
    let cut = ((tokens.len() as f64) * (1.0 - val_fraction)).floor() as usize;
    Ok(tokens.split_at(cut.min(tokens.len())))
}

pub(crate) fn check_fraction(f: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&f) {
        return Err(DataError::Invalid(format!(
            "a fraction must be between 0 and 1, got {f}"
        )));
    }
    Ok(())
}

/// Shuffles `items` with a seed, then cuts them into parts of the given fractions (the last
/// part takes the remainder, so nothing is lost to rounding).
pub fn seeded_split<T: Clone>(items: &[T], fractions: &[f64], seed: u64) -> Result<Vec<Vec<T>>> {
    let total: f64 = fractions.iter().sum();
    if fractions.is_empty() || (total - 1.0).abs() > 1e-9 || fractions.iter().any(|f| *f < 0.0) {
        return Err(DataError::Invalid(format!(
            "split fractions must be non-negative and sum to 1, got {fractions:?}"
        )));
    }
    let mut shuffled = items.to_vec();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = shuffled.len();
    let mut parts = Vec::with_capacity(fractions.len());
    let mut start = 0;
    for (i, f) in fractions.iter().enumerate() {
        let end = if i + 1 == fractions.len() {
            n
        } else {
            (start + (n as f64 * f) as usize).min(n)
        };
        parts.push(shuffled[start..end].to_vec());
        start = end;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_split_is_a_prefix_cut() {
        let t: Vec<u32> = (0..100).collect();
        let (train, val) = split_tokens(&t, 0.1).unwrap();
        assert_eq!((train.len(), val.len()), (90, 10));
        assert_eq!(val[0], 90);
        assert!(split_tokens(&t, 1.5).is_err());
    }

    #[test]
    fn seeded_split_is_deterministic_and_complete() {
        let items: Vec<u32> = (0..1100).collect();
        let a = seeded_split(&items, &[0.85, 0.05, 0.10], 7).unwrap();
        let b = seeded_split(&items, &[0.85, 0.05, 0.10], 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), [935, 55, 110]);
        let mut all: Vec<u32> = a.concat();
        all.sort();
        assert_eq!(all, items);
        assert_ne!(seeded_split(&items, &[0.85, 0.05, 0.10], 8).unwrap(), a);
        assert!(seeded_split(&items, &[0.5, 0.2], 1).is_err());
    }
}
