//! Token sampling: turning one row of logits into the next token. One implementation
//! serves the reference loop ([`crate::generate()`]) and `llm-infer`'s engine.
//!
//! Order of operations (as in Hugging Face's logits processors, OpenAI's penalties):
//! 1. repetition penalty on every token already in the sequence (`l / p` if `l > 0`, else
//!    `l · p`);
//! 2. presence and frequency penalties on generated tokens (`l − presence − count · frequency`);
//! 3. greedy takes the argmax here; otherwise divide by the temperature,
//! 4. keep the top-k, then the smallest set reaching top-p, then those with at least
//!    `min_p ·` the best probability,
//! 5. draw with a seeded ChaCha8 generator over the kept tokens in id order, in f64.
//!
//! Log-probabilities are the model's own (`log_softmax` of the raw logits).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ModelError, Result};

/// How a request picks its tokens, and when it stops.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_k: Option<usize>,
    /// In (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// In [0, 1]; 0 keeps every token.
    pub min_p: f32,
    /// > 0; 1 is none.
    pub repetition_penalty: f32,
    /// In [−2, 2], as OpenAI's.
    pub presence_penalty: f32,
    /// In [−2, 2], as OpenAI's.
    pub frequency_penalty: f32,
    pub seed: u64,
    /// Stop after one of these tokens (kept in the ids, not in the text).
    pub stop_ids: Vec<u32>,
    /// Stop before one of these strings (not in the text).
    pub stop: Vec<String>,
    /// Also return the `n` most likely alternatives of each step.
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 50,
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 42,
            stop_ids: Vec::new(),
            stop: Vec::new(),
            top_logprobs: 0,
        }
    }
}

fn bad(param: &'static str, message: String) -> ModelError {
    ModelError::Param { param, message }
}

impl SamplingParams {
    /// Checks every range; the error names the parameter.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(bad("max_new_tokens", "must be at least 1".into()));
        }
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(bad(
                "temperature",
                format!("must be a finite number ≥ 0 (0 is greedy), got {t}"),
            ));
        }
        if self.top_k == Some(0) {
            return Err(bad(
                "top_k",
                "must be at least 1 (leave it unset to keep every token)".into(),
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad("top_p", format!("must be in (0, 1], got {p}")));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(bad("min_p", format!("must be in [0, 1], got {m}")));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(bad(
                "repetition_penalty",
                format!("must be a finite number > 0 (1 is none), got {r}"),
            ));
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(bad(param, format!("must be in [-2, 2], got {v}")));
            }
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(bad("stop", "stop strings must not be empty".into()));
        }
        Ok(())
    }

    /// Whether the next token is always the most likely one.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// One chosen token.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub token: u32,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first, when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

impl Choice {
    /// `token` with its log-probability under `logits [vocab]`, and the `top` most likely
    /// tokens with theirs (the same floats: the best one's equals `logprob` when chosen).
    pub fn scored(logits: &[f32], token: u32, top: usize) -> Choice {
        let lse = log_sum_exp(logits);
        Choice {
            token,
            logprob: logits[token as usize] - lse,
            top_logprobs: top_n(logits, top)
                .into_iter()
                .map(|i| (i, logits[i as usize] - lse))
                .collect(),
        }
    }
}

/// Chooses one sequence's tokens: its parameters, its random stream and what it has said.
#[derive(Clone, Debug)]
pub struct TokenSampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// How often each token was generated (presence and frequency penalties).
    generated: HashMap<u32, u32>,
    /// Every token of the sequence, prompt included (repetition penalty).
    seen: Vec<bool>,
}

impl TokenSampler {
    /// A sampler for a sequence that starts with `prompt`; `params` must be valid.
    pub fn new(params: SamplingParams, prompt: &[u32], vocab: usize) -> Self {
        let mut seen = vec![false; vocab];
        for &t in prompt {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        TokenSampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            generated: HashMap::new(),
            seen,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits [vocab]` and remembers it.
    pub fn choose(&mut self, logits: &[f32]) -> Choice {
        let adjusted = self.penalised(logits);
        let token = if self.params.is_greedy() {
            argmax(&adjusted)
        } else {
            self.draw(&adjusted)
        };
        *self.generated.entry(token).or_default() += 1;
        if let Some(s) = self.seen.get_mut(token as usize) {
            *s = true;
        }
        Choice::scored(logits, token, self.params.top_logprobs)
    }

    fn penalised(&self, logits: &[f32]) -> Vec<f32> {
        let p = &self.params;
        let mut l = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            for (v, _) in l.iter_mut().zip(&self.seen).filter(|(_, s)| **s) {
                *v = if *v > 0.0 {
                    *v / p.repetition_penalty
                } else {
                    *v * p.repetition_penalty
                };
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &n) in &self.generated {
                l[t as usize] -= p.presence_penalty + n as f32 * p.frequency_penalty;
            }
        }
        l
    }

    /// Temperature, then top-k, top-p and min-p, then one seeded draw.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let t = p.temperature as f64;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut w: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - max) / t).exp())
            .collect();
        if let Some(k) = p.top_k.filter(|&k| k < w.len()) {
            let mut sorted = w.clone();
            sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let cut = sorted[k - 1];
            w.iter_mut().filter(|x| **x < cut).for_each(|x| *x = 0.0);
        }
        if p.top_p < 1.0 {
            top_p(&mut w, p.top_p as f64);
        }
        if p.min_p > 0.0 {
            let best = w.iter().copied().fold(0.0, f64::max);
            let floor = p.min_p as f64 * best;
            w.iter_mut().filter(|x| **x < floor).for_each(|x| *x = 0.0);
        }
        let total: f64 = w.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (i, x) in w.iter().enumerate() {
            if u < *x {
                return i as u32;
            }
            u -= x;
        }
        w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
    }
}

/// Zeroes every weight outside the smallest set of largest weights (ties by lower id) whose
/// share of the total reaches `top_p`. Only the head of the order is sorted: the `n`
/// largest, for `n` = 64, 256, … until they hold the mass (a full sort of 50,257 weights
/// costs milliseconds per token).
fn top_p(w: &mut [f64], top_p: f64) {
    let total: f64 = w.iter().sum();
    let mut order: Vec<u32> = (0..w.len() as u32)
        .filter(|&i| w[i as usize] > 0.0)
        .collect();
    let by = |a: &u32, b: &u32| w[*b as usize].total_cmp(&w[*a as usize]).then(a.cmp(b));
    let mut head = 64;
    let keep = loop {
        let n = head.min(order.len());
        if n < order.len() {
            order.select_nth_unstable_by(n, by);
        }
        order[..n].sort_by(by);
        let mut mass = 0.0;
        let found = order[..n].iter().position(|&i| {
            mass += w[i as usize] / total;
            mass >= top_p
        });
        match found {
            Some(at) => break at + 1,
            None if n == order.len() => break n,
            None => head *= 4,
        }
    };
    for &i in &order[keep..] {
        w[i as usize] = 0.0;
    }
}

/// Index of the largest value (the first on a tie), as `torch.argmax`.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    crate::kernels::simd::log_sum_exp(logits) as f32
}

/// The `n` largest, best first (ties by lower id).
fn top_n(logits: &[f32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(ids.len());
    let by = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    ids.select_nth_unstable_by(n - 1, by);
    ids.truncate(n);
    ids.sort_by(by);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `top_p` as a full sort does it.
    fn top_p_by_full_sort(w: &mut [f64], top_p: f64) {
        let total: f64 = w.iter().sum();
        let mut order: Vec<u32> = (0..w.len() as u32)
            .filter(|&i| w[i as usize] > 0.0)
            .collect();
        order.sort_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
        let mut mass = 0.0;
        let mut keep = order.len();
        for (n, &i) in order.iter().enumerate() {
            mass += w[i as usize] / total;
            if mass >= top_p {
                keep = n + 1;
                break;
            }
        }
        for &i in &order[keep..] {
            w[i as usize] = 0.0;
        }
    }

    #[test]
    fn top_p_keeps_what_a_full_sort_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (len, spread) in [(50_257, 12.0), (1000, 0.5), (300, 0.0), (5, 3.0)] {
            // Heavy heads and flat tails, and ties (spread 0: every weight equal).
            let w: Vec<f64> = (0..len)
                .map(|_| (spread * rng.random::<f64>()).exp().floor())
                .collect();
            for p in [0.1, 0.5, 0.9, 0.999, 1.0 - 1e-12] {
                let (mut got, mut want) = (w.clone(), w.clone());
                top_p(&mut got, p);
                top_p_by_full_sort(&mut want, p);
                assert_eq!(got, want, "len {len}, spread {spread}, top_p {p}");
            }
        }
    }

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        f(&mut p);
        p
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        let cases: [(SamplingParams, &str); 6] = [
            (params(|p| p.temperature = -0.5), "temperature"),
            (params(|p| p.top_p = 0.0), "top_p"),
            (params(|p| p.top_p = 1.5), "top_p"),
            (params(|p| p.top_k = Some(0)), "top_k"),
            (params(|p| p.min_p = 2.0), "min_p"),
            (params(|p| p.frequency_penalty = 3.0), "frequency_penalty"),
        ];
        for (p, name) in cases {
            let e = p.validate().unwrap_err();
            assert!(
                matches!(&e, ModelError::Param { param, .. } if *param == name),
                "{e}"
            );
            assert!(e.to_string().contains(name), "{e}");
        }
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn filters_keep_only_what_they_should() {
        let logits = [0.0, 5.0, 4.9, -3.0, 4.8, 1.0];
        let mut s = TokenSampler::new(
            params(|p| {
                p.temperature = 10.0;
                p.top_k = Some(3)
            }),
            &[],
            6,
        );
        for _ in 0..300 {
            assert!([1, 2, 4].contains(&s.choose(&logits).token));
        }
        // top_p 0.5 at temperature 1: tokens 1 (0.36) and 2 (0.33) reach it.
        let mut s = TokenSampler::new(
            params(|p| {
                p.temperature = 1.0;
                p.top_p = 0.5
            }),
            &[],
            6,
        );
        for _ in 0..300 {
            assert!([1, 2].contains(&s.choose(&logits).token));
        }
        // min_p 0.5: e^(5−x) ≤ 2 keeps 1, 2, 4.
        let mut s = TokenSampler::new(
            params(|p| {
                p.temperature = 1.0;
                p.min_p = 0.5
            }),
            &[],
            6,
        );
        for _ in 0..300 {
            assert!([1, 2, 4].contains(&s.choose(&logits).token));
        }
    }

    #[test]
    fn penalties_move_greedy_off_repeated_tokens() {
        let logits = [1.0, 3.0, 2.9];
        let mut s = TokenSampler::new(params(|p| p.repetition_penalty = 1.5), &[1], 3);
        assert_eq!(s.choose(&logits).token, 2);
        let mut s = TokenSampler::new(params(|p| p.frequency_penalty = 0.2), &[], 3);
        assert_eq!(s.choose(&logits).token, 1);
        assert_eq!(
            s.choose(&logits).token,
            2,
            "one use of token 1 costs it 0.2"
        );
        let mut s = TokenSampler::new(params(|p| p.presence_penalty = 1.0), &[], 3);
        let picks: Vec<u32> = (0..3).map(|_| s.choose(&logits).token).collect();
        assert_eq!(picks, [1, 2, 1], "presence costs once, however often");
    }

    #[test]
    fn seeded_draws_repeat_and_logprobs_are_the_models() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = TokenSampler::new(
                params(|p| {
                    p.temperature = 1.0;
                    p.seed = seed;
                    p.top_logprobs = 3
                }),
                &[],
                50,
            );
            (0..64).map(|_| s.choose(&logits)).collect::<Vec<_>>()
        };
        let (a, b) = (run(7), run(7));
        assert_eq!(a, b);
        assert_ne!(a, run(8));
        let lse = log_sum_exp(&logits);
        for c in &a {
            assert!((c.logprob - (logits[c.token as usize] - lse)).abs() < 1e-6);
            assert_eq!(c.top_logprobs.len(), 3);
            assert_eq!(c.top_logprobs[0].0, argmax(&logits));
        }
    }
}
