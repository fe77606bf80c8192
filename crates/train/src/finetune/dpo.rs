//! `dpo`: direct preference optimisation (Rafailov et al. 2023), as in the book's DPO
//! notebook (`ch07/04_preference-tuning-with-dpo`).
//!
//! ```text
//! loss = −log σ(β · ((π_chosen − ref_chosen) − (π_rejected − ref_rejected)))
//! ```
//!
//! `π_·` and `ref_·` are a response's log-probability given its prompt under the policy and
//! under the frozen reference ([`response_logprob`]: the mean over the response tokens, or
//! the sum). The reference is `dpo.reference`, or a copy of the start model; it runs on the
//! inner backend, so it has no gradients, no optimizer state and no dropout. Its
//! log-probabilities travel with each batch ([`DpoBatch`]), computed as the batch is drawn
//! or, with `dpo.cache_reference`, once for the whole training split.
//!
//! The rewards are `β·(π − ref)` of each response; `reward_margin` is chosen minus rejected
//! and `reward_accuracy` the share of pairs whose chosen reward is the larger. At the first
//! step the policy is the reference, so the loss is exactly ln 2.

use std::collections::BTreeMap;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use llm_bpe::Tokenizer;
use llm_data::dpo::{
    load_preferences, PreferenceBatch, PreferenceBatcher, PreferenceDataset, PreferenceExample,
    PreferenceItem,
};
use llm_data::instruct::PROMPT_TEMPLATE;
use llm_data::seeded_split;
use llm_model::{next_token_nll, Checkpoint, Gpt, Gpt2Config, KernelAutodiff, KernelBackend};
use serde_json::{json, Value};

use super::config::{FinetuneConfig, LogProb};
use super::epochs::Epochs;
use super::Saving;
use crate::error::{Result, TrainError};
use crate::task::{Evaluation, Inner, Objective, Task};

/// The policy being aligned: a GPT whose loss is DPO's.
#[derive(Module, Debug)]
pub struct Policy<B: Backend> {
    pub gpt: Gpt<B>,
    /// β.
    pub beta: f64,
    /// Mean (true) or sum (false) over the response tokens.
    pub mean: bool,
}

/// A batch of preference pairs with the reference's log-probabilities, `[b]` each.
#[derive(Clone, Debug)]
pub struct DpoBatch<B: Backend> {
    pub pairs: PreferenceBatch<B>,
    pub ref_chosen: Tensor<B, 1>,
    pub ref_rejected: Tensor<B, 1>,
}

/// DPO's loss and rewards for a batch.
#[derive(Clone, Debug)]
pub struct DpoTerms<B: Backend> {
    /// `[1]`, the mean over the batch.
    pub loss: Tensor<B, 1>,
    /// `β·(π_chosen − ref_chosen)`, `[b]`, detached.
    pub chosen_rewards: Tensor<B, 1>,
    /// `β·(π_rejected − ref_rejected)`, `[b]`, detached.
    pub rejected_rewards: Tensor<B, 1>,
}

/// The log-probability of each row's response under `model`: `log p(ids[i+1] | ids[..=i])`
/// over the positions whose next token the mask marks, averaged (`mean`) or summed. `[b]`.
pub fn response_logprob<B: KernelBackend>(
    model: &Gpt<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
    mean: bool,
) -> Tensor<B, 1> {
    let [b, t] = ids.dims();
    let inputs = ids.clone().narrow(1, 0, t - 1); // [b, t-1]
    let next = ids.narrow(1, 1, t - 1).reshape([b * (t - 1)]); // [b·(t-1)]
    let mask = mask.narrow(1, 1, t - 1); // [b, t-1]
    let nll = next_token_nll(model, inputs, next); // [b·(t-1)]
    let logp = nll.neg().reshape([b, t - 1]); // [b, t-1]
    let total = (logp * mask.clone()).sum_dim(1).reshape([b]); // [b]
    match mean {
        true => total / mask.sum_dim(1).reshape([b]).clamp_min(1.0),
        false => total,
    }
}

/// `−log σ(β·((π_c − ref_c) − (π_r − ref_r)))`, averaged over the batch, and the rewards.
pub fn dpo_loss<B: Backend>(
    policy_chosen: Tensor<B, 1>,
    policy_rejected: Tensor<B, 1>,
    ref_chosen: Tensor<B, 1>,
    ref_rejected: Tensor<B, 1>,
    beta: f64,
) -> DpoTerms<B> {
    let chosen = policy_chosen - ref_chosen; // [b]
    let rejected = policy_rejected - ref_rejected; // [b]
    let logits = (chosen.clone() - rejected.clone()) * beta; // [b]
    DpoTerms {
        loss: log_sigmoid(logits).mean().neg(),
        chosen_rewards: chosen.detach() * beta,
        rejected_rewards: rejected.detach() * beta,
    }
}

impl<B: KernelBackend> Policy<B> {
    /// The loss and rewards of a batch.
    pub fn terms(&self, batch: DpoBatch<B>) -> DpoTerms<B> {
        let p = batch.pairs;
        let chosen = response_logprob(&self.gpt, p.chosen, p.chosen_mask, self.mean);
        let rejected = response_logprob(&self.gpt, p.rejected, p.rejected_mask, self.mean);
        dpo_loss(
            chosen,
            rejected,
            batch.ref_chosen,
            batch.ref_rejected,
            self.beta,
        )
    }
}

impl<B: KernelAutodiff> Objective<B> for Policy<B> {
    type Batch = DpoBatch<B>;

    fn loss(&self, batch: DpoBatch<B>) -> Tensor<B, 1> {
        self.terms(batch).loss
    }
}

/// The reference's log-probabilities of a batch's chosen and rejected responses.
fn reference_logprobs<B: KernelBackend>(
    reference: &Gpt<B>,
    pairs: &PreferenceBatch<B>,
    mean: bool,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let p = pairs.clone();
    (
        response_logprob(reference, p.chosen, p.chosen_mask, mean),
        response_logprob(reference, p.rejected, p.rejected_mask, mean),
    )
}

fn to_vec<B: Backend>(t: Tensor<B, 1>) -> Result<Vec<f32>> {
    t.into_data()
        .to_vec()
        .map_err(|e| TrainError::Config(format!("reading log-probabilities: {e:?}")))
}

/// The DPO task: preference pairs, the frozen reference and the batch order.
pub struct Dpo<B: KernelAutodiff> {
    recipe: FinetuneConfig,
    base: Option<Gpt<B>>,
    base_config: Gpt2Config,
    reference: Gpt<B::InnerBackend>,
    tokenizer_name: String,
    splits: [PreferenceDataset; 3],
    batcher: PreferenceBatcher,
    truncated: usize,
    longest: usize,
    epochs: Epochs,
    saving: Saving,
    /// The reference's `(chosen, rejected)` log-probabilities of every training pair, once
    /// computed (`dpo.cache_reference`).
    cache: Option<Vec<(f32, f32)>>,
}

impl<B: KernelAutodiff> Dpo<B> {
    /// Reads and splits the pairs for `base`; `reference` is the frozen model to compare
    /// against (a copy of `base` when `None`).
    pub fn new(
        recipe: FinetuneConfig,
        base: Gpt<B>,
        reference: Option<Gpt<B::InnerBackend>>,
        tokenizer: &Tokenizer,
        tokenizer_name: &str,
    ) -> Result<Self> {
        let base_config = base.config().clone();
        let reference = reference.unwrap_or_else(|| base.valid());
        if reference
            .config()
            .differences(&base_config)
            .iter()
            .any(|(k, _, _)| k == "vocab_size")
        {
            return Err(TrainError::Config(format!(
                "the reference model's vocabulary ({}) is not the policy's ({})",
                reference.vocab_size(),
                base_config.vocab_size
            )));
        }
        let path = &recipe.data.path;
        let all = load_preferences(path)?;
        check_pairs(path, &all)?;
        let parts = seeded_split(&all, &[0.85, 0.05, 0.10], recipe.data.split_seed)?;
        let n_positions = base_config.n_positions.min(reference.config().n_positions);
        let (mut truncated, mut longest) = (0, 0);
        let mut splits = Vec::new();
        for set in &parts {
            let data = PreferenceDataset::new(set, tokenizer)
                .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
            for item in (0..data.len()).filter_map(|i| data.get(i)) {
                let len = item.chosen.len().max(item.rejected.len());
                truncated += (len > n_positions) as usize;
                longest = longest.max(len.min(n_positions));
            }
            splits.push(data);
        }
        let splits: [PreferenceDataset; 3] = splits
            .try_into()
            .map_err(|_| TrainError::Config("the split did not make three parts".into()))?;
        if splits[0].len() < recipe.run.batch_size {
            return Err(TrainError::key(
                "run.batch_size",
                format!(
                    "{} is more than the {} training pairs in {}",
                    recipe.run.batch_size,
                    splits[0].len(),
                    path.display()
                ),
            ));
        }
        let epochs = Epochs::new(splits[0].len(), recipe.run.batch_size, recipe.run.seed);
        let saving = Saving::new(&recipe, &base);
        Ok(Dpo {
            saving,
            base: Some(base),
            base_config,
            reference,
            tokenizer_name: tokenizer_name.to_string(),
            splits,
            batcher: PreferenceBatcher {
                pad_id: super::end_of_text(tokenizer)?,
                max_length: Some(n_positions),
            },
            truncated,
            longest,
            epochs,
            cache: None,
            recipe,
        })
    }

    /// Whole batches in one pass over the training split.
    pub fn batches_per_epoch(&self) -> usize {
        self.epochs.batches_per_epoch()
    }

    fn mean(&self) -> bool {
        self.recipe.dpo.logprob == LogProb::Mean
    }

    fn items(&self, split: usize, indices: &[usize]) -> Vec<PreferenceItem> {
        indices
            .iter()
            .filter_map(|&i| self.splits[split].get(i))
            .collect()
    }

    /// The reference's log-probabilities of every training pair, in fixed batches (so the
    /// values do not depend on the order the pairs are later drawn in).
    fn fill_cache(&mut self, device: &B::Device) -> Result<()> {
        let n = self.splits[0].len();
        let bs = self.recipe.run.batch_size.max(1);
        let mut cache = Vec::with_capacity(n);
        for start in (0..n).step_by(bs) {
            let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
            let pairs: PreferenceBatch<B::InnerBackend> =
                self.batcher.batch(self.items(0, &idx), device);
            let (c, r) = reference_logprobs(&self.reference, &pairs, self.mean());
            cache.extend(to_vec(c)?.into_iter().zip(to_vec(r)?));
        }
        self.cache = Some(cache);
        Ok(())
    }

    fn policy(&self, gpt: Gpt<B>) -> Policy<B> {
        let gpt = self.recipe.trainable().apply(gpt, self.base_config.n_layer);
        Policy {
            gpt,
            beta: self.recipe.dpo.beta,
            mean: self.mean(),
        }
    }

    /// Loss and rewards over the first `max_batches` batches of a split (all when `None`),
    /// as `(loss, {prefix_chosen_reward, prefix_rejected_reward, prefix_reward_margin,
    /// prefix_reward_accuracy})`.
    fn measure(
        &self,
        model: &Policy<B::InnerBackend>,
        split: usize,
        max_batches: Option<usize>,
        device: &B::Device,
    ) -> Result<Option<(f64, BTreeMap<String, f64>)>> {
        let n = self.splits[split].len();
        let bs = self.recipe.run.batch_size.max(1);
        let starts: Vec<usize> = (0..n)
            .step_by(bs)
            .take(max_batches.unwrap_or(usize::MAX))
            .collect();
        if starts.is_empty() {
            return Ok(None);
        }
        let (mut loss, mut chosen, mut rejected, mut wins, mut count) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for start in &starts {
            let idx: Vec<usize> = (*start..(start + bs).min(n)).collect();
            let pairs: PreferenceBatch<B::InnerBackend> =
                self.batcher.batch(self.items(split, &idx), device);
            let (rc, rr) = reference_logprobs(&self.reference, &pairs, self.mean());
            let t = model.terms(DpoBatch {
                pairs,
                ref_chosen: rc,
                ref_rejected: rr,
            });
            let l: f64 = t.loss.into_scalar().elem();
            let (c, r) = (to_vec(t.chosen_rewards)?, to_vec(t.rejected_rewards)?);
            loss += l * idx.len() as f64;
            chosen += c.iter().map(|&x| x as f64).sum::<f64>();
            rejected += r.iter().map(|&x| x as f64).sum::<f64>();
            wins += c.iter().zip(&r).filter(|(a, b)| a > b).count() as f64;
            count += idx.len() as f64;
        }
        let prefix = ["train", "val", "test"][split];
        let metrics = BTreeMap::from([
            (format!("{prefix}_chosen_reward"), chosen / count),
            (format!("{prefix}_rejected_reward"), rejected / count),
            (
                format!("{prefix}_reward_margin"),
                (chosen - rejected) / count,
            ),
            (format!("{prefix}_reward_accuracy"), wins / count),
        ]);
        Ok(Some((loss / count, metrics)))
    }
}

/// Every pair needs an instruction and two non-empty responses: an error names the entry.
fn check_pairs(path: &std::path::Path, pairs: &[PreferenceExample]) -> Result<()> {
    for (i, e) in pairs.iter().enumerate() {
        for (field, text) in [
            ("instruction", &e.instruction),
            ("chosen", &e.chosen),
            ("rejected", &e.rejected),
        ] {
            if text.trim().is_empty() {
                return Err(TrainError::Config(format!(
                    "{}: entry {i} (0-based): field `{field}` is empty",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

impl<B: KernelAutodiff> Task<B> for Dpo<B> {
    type Model = Policy<B>;

    fn name(&self) -> &'static str {
        "dpo"
    }

    fn model_config(&self) -> &Gpt2Config {
        &self.base_config
    }

    fn tokenizer_name(&self) -> &str {
        &self.tokenizer_name
    }

    fn recipe(&self) -> Value {
        serde_json::to_value(&self.recipe).expect("recipe serialises")
    }

    fn describe(&self) -> String {
        let [train, val, test] = &self.splits;
        format!(
            "DPO (β = {}, {} log-probabilities{}): {} train, {} val, {} test pairs, up to {} tokens ({} cut to the context); trains {}",
            self.recipe.dpo.beta,
            if self.mean() { "mean" } else { "summed" },
            if self.recipe.dpo.cache_reference { ", reference cached" } else { "" },
            train.len(),
            val.len(),
            test.len(),
            self.longest,
            self.truncated,
            self.recipe.trainable()
        )
    }

    fn prepare(&mut self, _run: &crate::run::RunDir) -> Result<Vec<String>> {
        if !self.recipe.dpo.cache_reference {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let device = self
            .reference
            .devices()
            .into_iter()
            .next()
            .unwrap_or_default();
        self.fill_cache(&device)?;
        Ok(vec![format!(
            "cached the reference's log-probabilities of {} training pairs in {:.1} s",
            self.splits[0].len(),
            started.elapsed().as_secs_f64()
        )])
    }

    fn init_model(&mut self, device: &B::Device) -> Result<Policy<B>> {
        let base = self.base.take().expect("the base model is used once");
        let gpt = self.recipe.start_from(base, device)?;
        Ok(self.policy(gpt))
    }

    fn load_model(&self, ckpt: &Checkpoint, device: &B::Device) -> Result<Policy<B>> {
        let gpt = self
            .saving
            .load(ckpt, self.base.as_ref(), &self.base_config, device)?;
        let gpt = self.recipe.with_dropout(gpt);
        Ok(self.policy(gpt))
    }

    /// The GPT (or, with LoRA, its adapters) and the prompt template it learned.
    fn save_model(&self, model: &Policy<B::InnerBackend>) -> Result<Checkpoint> {
        let mut ckpt = self.saving.save(&model.gpt)?;
        ckpt.metadata["prompt_template"] = json!(PROMPT_TEMPLATE);
        Ok(ckpt)
    }

    /// An upper bound: chosen and rejected rows of the longest pair.
    fn tokens_per_batch(&self) -> usize {
        2 * self.recipe.run.batch_size * self.longest
    }

    fn next_batch(&mut self, device: &B::Device) -> Result<DpoBatch<B>> {
        let idx = self.epochs.next_batch().to_vec();
        let items = self.items(0, &idx);
        let (rc, rr) = match &self.cache {
            Some(cache) => {
                let (c, r): (Vec<f32>, Vec<f32>) = idx.iter().map(|&i| cache[i]).unzip();
                let n = idx.len();
                (
                    Tensor::from_data(TensorData::new(c, [n]), device),
                    Tensor::from_data(TensorData::new(r, [n]), device),
                )
            }
            None => {
                let pairs: PreferenceBatch<B::InnerBackend> =
                    self.batcher.batch(items.clone(), device);
                let (c, r) = reference_logprobs(&self.reference, &pairs, self.mean());
                (Tensor::from_inner(c), Tensor::from_inner(r))
            }
        };
        Ok(DpoBatch {
            pairs: self.batcher.batch(items, device),
            ref_chosen: rc,
            ref_rejected: rr,
        })
    }

    fn position(&self) -> Value {
        self.epochs.position()
    }

    fn restore_position(&mut self, position: Value) -> Result<()> {
        self.epochs.restore(position)
    }

    fn evaluate(
        &mut self,
        model: &Inner<B, Policy<B>>,
        device: &B::Device,
    ) -> Result<Option<Evaluation>> {
        let Some((loss, mut metrics)) = self.measure(model, 1, None, device)? else {
            return Ok(None);
        };
        let batches = Some(self.recipe.run.eval_batches.max(1));
        if let Some((train_loss, train)) = self.measure(model, 0, batches, device)? {
            metrics.insert("train_loss".into(), train_loss);
            metrics.extend(train);
        }
        Ok(Some(Evaluation { loss, metrics }))
    }

    fn probe_loss(
        &mut self,
        model: &Inner<B, Policy<B>>,
        device: &B::Device,
    ) -> Result<Option<f64>> {
        Ok(self.measure(model, 1, Some(1), device)?.map(|(l, _)| l))
    }

    fn finish(
        &mut self,
        model: &Inner<B, Policy<B>>,
        _run: &crate::run::RunDir,
        device: &B::Device,
    ) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        if let Some((loss, metrics)) = self.measure(model, 1, None, device)? {
            out.insert("val_loss".into(), loss);
            out.extend(metrics);
        }
        out.insert("truncated".into(), self.truncated as f64);
        Ok(out)
    }
}
