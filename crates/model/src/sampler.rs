//! Picking the next token from a row of logits: greedy, temperature and top-k, seeded.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Chooses next tokens. Temperature 0 means greedy (argmax); otherwise the logits are divided
/// by the temperature, cut to the `top_k` largest if set (ties at the cut are kept, as in
/// nanoGPT), and sampled from with a seeded ChaCha8 generator, so a seed gives the same text
/// on every run and platform.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::new(0.0, None, 0)
    }

    /// A sampler with a temperature (0 = greedy), an optional top-k, and a seed.
    pub fn new(temperature: f32, top_k: Option<usize>, seed: u64) -> Self {
        Sampler {
            temperature: temperature.max(0.0),
            top_k: top_k.filter(|&k| k > 0),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Whether this sampler always takes the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }

    /// The next token for one row of logits `[vocab]`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let t = self.temperature as f64;
        let cut = match self.top_k {
            Some(k) if k < logits.len() => {
                let mut sorted = logits.to_vec();
                sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                sorted[k - 1]
            }
            _ => f32::NEG_INFINITY,
        };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| {
                if l >= cut {
                    ((l as f64 - max) / t).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
        // Rounding left u at the very end: take the last token with weight.
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
    }
}

/// Index of the largest value (the first one on a tie), as `torch.argmax`.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(Sampler::greedy().sample(&[0.5, -1.0, 2.5]), 2);
    }

    #[test]
    fn top_k_never_leaves_the_k_best() {
        let logits = [0.0, 5.0, 4.9, -3.0, 4.8, 1.0];
        let mut s = Sampler::new(10.0, Some(3), 1);
        for _ in 0..500 {
            assert!([1, 2, 4].contains(&s.sample(&logits)));
        }
    }

    #[test]
    fn same_seed_same_tokens_and_temperature_spreads() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(1.0, None, seed);
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let distinct: std::collections::HashSet<_> = run(7).into_iter().collect();
        assert!(distinct.len() > 10);
    }
}
