//! Fine-tuning: tasks that start from a trained GPT and run through the one loop.
//!
//! - [`FinetuneConfig`]: the recipe (`configs/finetune-*.json`).
//! - [`Classify`]: spam classification with a 2-way head (chapter 6).
//! - [`Instruct`]: instruction fine-tuning with the Alpaca template (chapter 7).
//! - [`Dpo`]: direct preference optimisation against a frozen reference.
//! - [`finetune`]: builds the recipe's task on a base model and trains it.

use burn::tensor::backend::Backend;
use llm_bpe::Tokenizer;
use llm_model::adapters::BaseModel;
use llm_model::KernelAutodiff;
use llm_model::{Checkpoint, Gpt, Gpt2Config, LoraConfig};

use crate::error::{Result, TrainError};
use crate::task::Task;
use crate::trainer::{accumulation, train_task, Summary, TrainOptions};

mod classify;
mod config;
mod dpo;
mod epochs;
mod instruct;
pub mod score;

pub use classify::{predict, Classify, LABELS};

/// The token that pads a batch and ends each example: `<|endoftext|>` (50256 for GPT-2), or
/// another tokenizer's end of sequence (a Llama's `</s>`).
pub(crate) fn end_of_text(tokenizer: &Tokenizer) -> Result<u32> {
    tokenizer.eot_id().ok_or_else(|| {
        TrainError::Config(format!(
            "the tokenizer {} has no end-of-text token (<|endoftext|>, or an eos_token such as </s>): fine-tuning pads and ends examples with it",
            tokenizer.name()
        ))
    })
}
pub use config::{DpoConfig, FinetuneConfig, FinetuneData, InstructConfig, LogProb, TASKS};
pub use dpo::{dpo_loss, response_logprob, Dpo, DpoBatch, DpoTerms, Policy};
pub use instruct::{Instruct, TEST_RESPONSES};

/// Fine-tunes `base` as `recipe` says, in `options.run_dir` on `device` (and, with
/// `run.devices` > 1, the devices after it). The tokenizer must fit the model's vocabulary.
/// `reference` is DPO's reference model (a copy of `base` when `None`); other tasks ignore
/// it. A base that carries LoRA adapters (a LoRA run) has them merged first: they are part
/// of what it learned.
pub fn finetune<B: KernelAutodiff>(
    recipe: FinetuneConfig,
    base: Gpt<B>,
    reference: Option<Gpt<B::InnerBackend>>,
    tokenizer: &Tokenizer,
    tokenizer_name: &str,
    options: TrainOptions,
    device: B::Device,
) -> Result<Summary> {
    recipe.validate()?;
    if tokenizer.vocab_size() > base.vocab_size() {
        return Err(TrainError::Config(format!(
            "the tokenizer {tokenizer_name:?} has {} tokens but the model's vocabulary only {}: \
             the model was trained with another tokenizer",
            tokenizer.vocab_size(),
            base.vocab_size()
        )));
    }
    let base = if base.has_lora() {
        base.merge_lora()
    } else {
        base
    };
    let reference = reference.map(|r| if r.has_lora() { r.merge_lora() } else { r });
    let (tok, name) = (tokenizer, tokenizer_name);
    match recipe.task.as_str() {
        "classify" => {
            let task = Classify::new(recipe.clone(), base, tok, name)?;
            let batches = task.batches_per_epoch();
            run(task, batches, &recipe, options, device)
        }
        "instruct" => {
            let task = Instruct::new(recipe.clone(), base, tok, name)?;
            let batches = task.batches_per_epoch();
            run(task, batches, &recipe, options, device)
        }
        "dpo" => {
            let task = Dpo::new(recipe.clone(), base, reference, tok, name)?;
            let batches = task.batches_per_epoch();
            run(task, batches, &recipe, options, device)
        }
        other => Err(TrainError::key("task", format!("unknown task {other:?}"))),
    }
}

/// Runs a task through the loop, its `epochs` counted in optimizer steps: each step takes
/// `accum` micro-batches (`run.tokens_per_step`, `run.devices`).
fn run<B: KernelAutodiff, T: Task<B>>(
    task: T,
    batches_per_epoch: usize,
    recipe: &FinetuneConfig,
    options: TrainOptions,
    device: B::Device,
) -> Result<Summary> {
    let devices = crate::parallel::devices::<B>(&device, recipe.run.devices)?;
    let accum = accumulation(
        recipe.run.tokens_per_step,
        task.tokens_per_batch(),
        devices.len(),
    );
    let settings = recipe.loop_config((batches_per_epoch / accum).max(1));
    train_task::<B, T>(task, settings, options, devices)
}

impl FinetuneConfig {
    /// The base as fine-tuning starts from it: the recipe's dropout, then fresh LoRA
    /// adapters if the recipe has them.
    pub(crate) fn start_from<B: Backend>(
        &self,
        base: Gpt<B>,
        device: &B::Device,
    ) -> Result<Gpt<B>> {
        let gpt = self.with_dropout(base);
        Ok(match &self.lora {
            Some(lora) => gpt.with_lora(lora, device)?,
            None => gpt,
        })
    }

    /// `gpt` with the recipe's dropout (the model's own when the recipe leaves it out).
    pub(crate) fn with_dropout<B: Backend>(&self, gpt: Gpt<B>) -> Gpt<B> {
        match self.dropout {
            Some(p) => gpt.with_dropout(p),
            None => gpt,
        }
    }
}

/// How a fine-tuned GPT is saved and restored: whole, or, with LoRA, the adapters alone
/// with the base named and fingerprinted.
pub(crate) struct Saving {
    lora: Option<LoraConfig>,
    base: BaseModel,
}

impl Saving {
    pub(crate) fn new<B: Backend>(recipe: &FinetuneConfig, base: &Gpt<B>) -> Self {
        let sha256 = match recipe.lora {
            Some(_) => base.base_fingerprint(),
            None => String::new(),
        };
        // A path is stored whole, so the checkpoint loads from any working directory.
        let model = std::fs::canonicalize(&recipe.model)
            .map_or(recipe.model.clone(), |p| p.display().to_string());
        Saving {
            lora: recipe.lora.clone(),
            base: BaseModel { model, sha256 },
        }
    }

    /// A checkpoint of the GPT (the caller adds a head or metadata).
    pub(crate) fn save<B: Backend>(&self, gpt: &Gpt<B>) -> Result<Checkpoint> {
        Ok(match &self.lora {
            Some(lora) => Checkpoint::from_adapters(gpt, lora, &self.base)?,
            None => Checkpoint::from_model(gpt)?,
        })
    }

    /// The GPT a checkpoint made by [`Self::save`] holds: the adapters on `base`, or the
    /// whole model.
    pub(crate) fn load<B: Backend>(
        &self,
        ckpt: &Checkpoint,
        base: Option<&Gpt<B>>,
        config: &Gpt2Config,
        device: &B::Device,
    ) -> Result<Gpt<B>> {
        let saved = ckpt.lora_base().map(|(_, lora)| lora);
        if saved != self.lora {
            let say = |l: &Option<LoraConfig>| match l {
                Some(l) => format!(
                    "LoRA rank {}, alpha {:?}, targets {:?}",
                    l.rank, l.alpha, l.targets
                ),
                None => "no LoRA".into(),
            };
            return Err(TrainError::Resume(format!(
                "the checkpoint was trained with {}, the recipe asks for {}",
                say(&saved),
                say(&self.lora)
            )));
        }
        Ok(match (&self.lora, base) {
            (Some(_), Some(base)) => ckpt.adapted(base.clone(), device)?,
            (Some(_), None) => {
                return Err(TrainError::Resume(
                    "a LoRA run resumes on its base model, which is no longer loaded".into(),
                ))
            }
            (None, _) => ckpt.load_into(config.init::<B>(device)?, device)?,
        })
    }
}
