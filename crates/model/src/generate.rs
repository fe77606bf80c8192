//! A simple autoregressive `generate`, with the KV cache. The fuller engine (top-p,
//! repetition penalty, batching, streaming, quantization) lives in `llm-infer`.

use burn::tensor::backend::Backend;

use crate::error::{ModelError, Result};
use crate::model::{ForwardOptions, Gpt};
use crate::sampler::Sampler;

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

/// Generates up to `max_new_tokens` after `prompt` and returns the new tokens; `on_token`
/// sees each one as it is made.
///
/// The prompt runs once through the model to fill the KV cache; then each step runs only the
/// newest token. A prompt longer than `n_positions` is an error. When the cache is full
/// (prompt + new tokens reach `n_positions`), generation goes on with a **sliding crop**: the
/// cache is rebuilt from the last `n_positions / 2` tokens, so later tokens see at most that
/// much context (the same trade-off as nanoGPT's `idx[:, -block_size:]`, amortised).
pub fn generate<B: Backend>(
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
    let n_positions = model.n_positions();
    if prompt.len() > n_positions {
        return Err(ModelError::ContextOverflow {
            len: prompt.len(),
            n_positions,
        });
    }
    let mut sampler = Sampler::new(config.temperature, config.top_k, config.seed);
    let mut cache = model.new_cache();
    let mut sequence = prompt.to_vec();
    let mut new_tokens = Vec::with_capacity(config.max_new_tokens);
    let last_only = ForwardOptions {
        attentions: false,
        last_only: true,
    };

    // The tokens the next forward must feed: the whole prompt first, then one at a time.
    let mut pending: Vec<u32> = prompt.to_vec();
    while new_tokens.len() < config.max_new_tokens {
        if cache.len() + pending.len() > n_positions {
            let keep = (n_positions / 2).max(1);
            cache.clear();
            pending = sequence[sequence.len() - keep..].to_vec();
        }
        let ids = model.tokens(&[&pending], device)?;
        let logits = model.forward_with(ids, Some(&mut cache), last_only)?.logits; // [1, 1, vocab]
        let row: Vec<f32> = logits.into_data().iter::<f32>().collect();
        let next = sampler.sample(&row);
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
pub fn generate_uncached<B: Backend>(
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
        sequence.push(crate::sampler::argmax(&row));
    }
    Ok(sequence[prompt.len()..].to_vec())
}
