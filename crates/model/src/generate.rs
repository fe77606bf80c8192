//! A simple autoregressive `generate`, with the KV cache. The fuller engine (top-p,
//! repetition penalty, batching, streaming, quantization) lives in `llm-infer`.

use crate::error::{ModelError, Result};
use crate::kernels::KernelBackend;
use crate::model::{ForwardOptions, Gpt};
use crate::sampling::{argmax, SamplingParams, TokenSampler};

/// Settings for [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// Stop after this many new tokens.
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub seed: u64,
    /// Stop early after producing this token (e.g. `<|endoftext|>`, 50256), which is kept.
    pub stop_token: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 50,
            temperature: 0.0,
            top_k: None,
            seed: 42,
            stop_token: None,
        }
    }
}

impl GenerateConfig {
    /// These settings as [`SamplingParams`], the token sampler's.
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            // `generate` allows 0 new tokens (it returns none); the sampler's check does not.
            max_new_tokens: self.max_new_tokens.max(1),
            temperature: self.temperature,
            top_k: self.top_k,
            seed: self.seed,
            stop_ids: self.stop_token.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Checks the settings by [`SamplingParams::validate`]'s rules (a finite temperature
    /// ≥ 0, a top-k of at least 1); the error names the parameter.
    pub fn validate(&self) -> Result<()> {
        self.sampling().validate()
    }
}

/// Generates up to `max_new_tokens` after `prompt` and returns the new tokens; `on_token`
/// sees each one as it is made.
///
/// The prompt runs once through the model to fill the KV cache; then each step runs only the
/// newest token. The model never sees more than `n_positions` tokens, one rule for prompts
/// and generated text alike (nanoGPT's `idx[:, -block_size:]`, amortised):
/// - a prompt longer than `n_positions` is cut to its last `n_positions` tokens;
/// - when the cache is full, it is rebuilt from the last `n_positions / 2` tokens, and
///   generation goes on from there.
///
/// Every new token is a token of the model; non-finite logits are an error.
pub fn generate<B: KernelBackend>(
    model: &Gpt<B>,
    prompt: &[u32],
    config: &GenerateConfig,
    device: &B::Device,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::Input(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    config.validate()?;
    let n_positions = model.n_positions();
    let mut sampler = TokenSampler::new(config.sampling(), prompt, model.vocab_size());
    let mut cache = model.new_cache();
    let mut sequence = prompt.to_vec();
    let mut new_tokens = Vec::with_capacity(config.max_new_tokens);
    let last_only = ForwardOptions {
        attentions: false,
        last_only: true,
    };

    // The tokens the next forward must feed: the prompt (its last n_positions tokens)
    // first, then one at a time.
    let mut pending: Vec<u32> = prompt[prompt.len().saturating_sub(n_positions)..].to_vec();
    while new_tokens.len() < config.max_new_tokens {
        if cache.len() + pending.len() > n_positions {
            let keep = (n_positions / 2).max(1);
            cache.clear();
            pending = sequence[sequence.len() - keep..].to_vec();
        }
        let ids = model.tokens(&[&pending], device)?;
        let logits = model.forward_with(ids, Some(&mut cache), last_only)?.logits; // [1, 1, vocab]
        let row: Vec<f32> = logits.into_data().iter::<f32>().collect();
        if row.iter().any(|l| l.is_nan() || *l == f32::INFINITY) {
            return Err(ModelError::Input(format!(
                "the model's logits are not finite at new token {}: its weights or activations overflow",
                new_tokens.len() + 1
            )));
        }
        let next = sampler.choose(&row).token;
        sequence.push(next);
        new_tokens.push(next);
        on_token(next);
        if config.stop_token == Some(next) {
            break;
        }
        pending = vec![next];
    }
    Ok(new_tokens)
}

/// Greedy generation without a cache: the whole sequence is recomputed for every token.
/// Slow; it exists to check the cached path against.
pub fn generate_uncached<B: KernelBackend>(
    model: &Gpt<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<Vec<u32>> {
    let mut sequence = prompt.to_vec();
    let last_only = ForwardOptions {
        attentions: false,
        last_only: true,
    };
    for _ in 0..max_new_tokens {
        let start = sequence.len().saturating_sub(model.n_positions());
        let ids = model.tokens(&[&sequence[start..]], device)?;
        let logits = model.forward_with(ids, None, last_only)?.logits;
        let row: Vec<f32> = logits.into_data().iter::<f32>().collect();
        sequence.push(argmax(&row));
    }
    Ok(sequence[prompt.len()..].to_vec())
}
