//! What the loop measures on the model without training it: the loss on fixed batches of a
//! split, multiple-choice accuracy (HellaSwag), and a sample from the run's prompt. All run
//! on `model.valid()`.

use std::path::Path;

use burn::tensor::ElementConversion;
use llm_bpe::Tokenizer;
use llm_data::{ShardSet, TokenBatches};
use llm_model::mc::{check_items, read_items, score_items, McItem, McSummary};
use llm_model::{generate, lm_losses, GenerateConfig, Gpt, Gpt2Config, KernelBackend};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// A split's mean losses: the cross-entropy, and a mixture of experts' load-balancing loss.
pub(super) struct SplitLoss {
    pub loss: f64,
    pub router_aux: Option<f64>,
}

/// Mean losses over `batches` sequential batches from the start of `split` (the same
/// batches at every evaluation, so values compare). `None` if the split has no data.
pub(super) fn evaluate<B: KernelBackend>(
    model: &Gpt<B>,
    dir: &Path,
    split: &str,
    batches: usize,
    batch_size: usize,
    seq_len: usize,
    device: &B::Device,
) -> Result<Option<SplitLoss>> {
    let set = ShardSet::open(dir, split)?;
    if set.num_shards() == 0 || batches == 0 {
        return Ok(None);
    }
    let mut tb = match TokenBatches::sequential(set, batch_size, seq_len, 0) {
        Ok(tb) => tb,
        Err(llm_data::DataError::TooSmall(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (mut total, mut aux_total) = (0.0, None::<f64>);
    for _ in 0..batches {
        let batch = tb.next_batch::<B>(device)?;
        let (loss, aux) = lm_losses(model, batch.inputs, batch.targets);
        total += loss.into_scalar().elem::<f64>();
        if let Some(aux) = aux {
            *aux_total.get_or_insert(0.0) += aux.into_scalar().elem::<f64>();
        }
    }
    let n = batches as f64;
    Ok(Some(SplitLoss {
        loss: total / n,
        router_aux: aux_total.map(|a| a / n),
    }))
}

/// The items of `run.mc_eval_file` (the first `run.mc_eval_items`), read and checked
/// against the model before the run starts; none when it is not set.
pub(super) fn mc_items(
    config: &TrainConfig,
    tok: &Tokenizer,
    model: &Gpt2Config,
) -> Result<Vec<McItem>> {
    let Some(path) = &config.run.mc_eval_file else {
        return Ok(Vec::new());
    };
    let bad = |e: String| TrainError::key("run.mc_eval_file", e);
    let mut items = read_items(path).map_err(|e| bad(e.to_string()))?;
    items.truncate(config.run.mc_eval_items.unwrap_or(usize::MAX));
    check_items(&items, tok, model.n_positions, model.vocab_size)
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    Ok(items)
}

/// Multiple-choice accuracy as `cargo xtask eval-mc` computes it (build-nanogpt's rule),
/// `rows` rows per forward pass.
pub(super) fn multiple_choice<B: KernelBackend>(
    model: &Gpt<B>,
    tok: &Tokenizer,
    items: &[McItem],
    rows: usize,
    device: &B::Device,
) -> Result<McSummary> {
    let scores = score_items(model, tok, items, rows, device)
        .map_err(|e| TrainError::key("run.mc_eval_file", e.to_string()))?;
    Ok(McSummary::of(&scores))
}

/// A sample from the run's fixed prompt.
pub(super) fn sample<B: KernelBackend>(
    model: &Gpt<B>,
    tok: &Tokenizer,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<String> {
    let r = &config.run;
    let mut prompt = tok.encode_ordinary(&r.sample_prompt);
    if prompt.is_empty() {
        prompt.extend(tok.eot_id());
    }
    let g = GenerateConfig {
        max_new_tokens: r.sample_tokens,
        temperature: r.sample_temperature,
        top_k: r.sample_top_k,
        seed: r.seed,
        stop_token: None,
    };
    let new = generate(model, &prompt, &g, device, |_| {})?;
    // A padded vocabulary can produce ids the tokenizer lacks: drop those.
    let ids: Vec<u32> = prompt
        .iter()
        .chain(&new)
        .copied()
        .filter(|&i| (i as usize) < tok.vocab_size())
        .collect();
    Ok(tok.decode(&ids)?)
}
