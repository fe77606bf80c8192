//! Run recipes: model + data + optimizer + schedule + run settings, read from
//! `configs/*.json`, with `--set key=value` overrides on top. Unknown keys and bad values
//! are errors that name the key.

use std::path::{Path, PathBuf};

use llm_data::Sampling;
use llm_model::Gpt2Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// The model to train: a preset, with any field changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `tiny`, `mini` or `small`.
    pub preset: Option<String>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_embd: Option<usize>,
    /// Context length.
    pub n_positions: Option<usize>,
    pub n_inner: Option<usize>,
    /// Defaults to the tokenizer's vocabulary size.
    pub vocab_size: Option<usize>,
    /// Every dropout probability at once.
    pub dropout: Option<f64>,
    pub tie_word_embeddings: Option<bool>,
    pub qkv_bias: Option<bool>,
}

impl ModelConfig {
    /// The full model config, for a tokenizer of `vocab_size` tokens.
    pub fn resolve(&self, vocab_size: usize) -> Result<Gpt2Config> {
        let mut c = Gpt2Config::preset(self.preset.as_deref().unwrap_or("small"))
            .map_err(|e| TrainError::Config(format!("model.preset: {e}")))?;
        c.vocab_size = self.vocab_size.unwrap_or(vocab_size);
        let set = |dst: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut c.n_layer, self.n_layer);
        set(&mut c.n_head, self.n_head);
        set(&mut c.n_embd, self.n_embd);
        set(&mut c.n_positions, self.n_positions);
        if self.n_inner.is_some() {
            c.n_inner = self.n_inner;
        }
        if let Some(p) = self.dropout {
            c = c.with_dropout(p);
        }
        if let Some(t) = self.tie_word_embeddings {
            c.tie_word_embeddings = t;
        }
        if let Some(b) = self.qkv_bias {
            c.qkv_bias = b;
        }
        c.validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        if c.vocab_size < vocab_size {
            return Err(TrainError::Config(format!(
                "model.vocab_size {} is smaller than the tokenizer's {vocab_size}",
                c.vocab_size
            )));
        }
        Ok(c)
    }
}

/// Where the tokens come from: text to prepare, or shards made by `cargo xtask prepare`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `.txt` / `.jsonl` files (or directories), tokenized into the run directory on first
    /// use. Relative paths are relative to the working directory.
    pub inputs: Vec<PathBuf>,
    /// A directory made by `cargo xtask prepare` (instead of `inputs`).
    pub shards: Option<PathBuf>,
    /// Tokenizer for `inputs`: `gpt2`, a directory or a tokenizer.json.
    pub tokenizer: String,
    pub val_fraction: f64,
    pub text_field: String,
    /// `random` windows (nanoGPT) or `sequential` (llm.c).
    pub sampling: Sampling,
    /// Tokens per training row; defaults to the model's context.
    pub seq_len: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            inputs: Vec::new(),
            shards: None,
            tokenizer: "gpt2".into(),
            val_fraction: 0.1,
            text_field: "text".into(),
            sampling: Sampling::Random,
            seq_len: None,
        }
    }
}

/// AdamW with GPT-2's parameter groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to 2-D weights and embeddings only, never to biases or LayerNorm…
    pub weight_decay: f32,
    /// …unless this is set: decay on every parameter (torch's plain `AdamW(model.parameters())`).
    pub decay_all: bool,
    /// Global-norm gradient clipping; 0 turns it off.
    pub grad_clip: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lr: 6e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_all: false,
            grad_clip: 1.0,
        }
    }
}

/// Linear warmup, then cosine decay to `min_lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub max_steps: usize,
    pub warmup_steps: usize,
    /// Steps over which the cosine runs (default `max_steps`); the LR stays at `min_lr` after.
    pub decay_steps: Option<usize>,
    pub min_lr: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            max_steps: 1000,
            warmup_steps: 100,
            decay_steps: None,
            min_lr: 6e-5,
        }
    }
}

/// Batch size, evaluation, samples, checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name: the run directory is `runs/<name>` unless `--out` says otherwise.
    pub name: String,
    /// Rows per forward pass (per device).
    pub batch_size: usize,
    /// Devices to train on, data-parallel (Burn's collective all-reduce); 1 = one device.
    pub devices: usize,
    /// Tokens per optimizer step; reached by gradient accumulation over micro-batches.
    /// Defaults to one micro-batch (`batch_size × seq_len`).
    pub tokens_per_step: Option<usize>,
    pub seed: u64,
    /// Evaluate every N steps (and at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Generate a sample every N steps (and at the end); 0 = only at the end.
    pub sample_every: usize,
    pub sample_prompt: String,
    pub sample_tokens: usize,
    pub sample_temperature: f32,
    pub sample_top_k: Option<usize>,
    /// Save a checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// Keep this many recent checkpoints (the best by val loss is kept as well).
    pub keep_last: usize,
    /// Log metrics every N steps.
    pub log_every: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "run".into(),
            batch_size: 8,
            devices: 1,
            tokens_per_step: None,
            seed: 1337,
            eval_every: 100,
            eval_batches: 20,
            sample_every: 200,
            sample_prompt: "\n".into(),
            sample_tokens: 100,
            sample_temperature: 0.8,
            sample_top_k: Some(200),
            checkpoint_every: 200,
            keep_last: 3,
            log_every: 1,
        }
    }
}

/// A whole run recipe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// What the recipe is for and what to expect (free text).
    pub description: String,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub run: RunConfig,
}

/// Every key path of a JSON object, for checking user keys against the known ones.
fn known(defaults: &Value, user: &Value, prefix: &str) -> Result<()> {
    let (Value::Object(d), Value::Object(u)) = (defaults, user) else {
        return Ok(());
    };
    for (k, v) in u {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match d.get(k) {
            None => {
                let choices: Vec<&str> = d.keys().map(String::as_str).collect();
                return Err(TrainError::Config(format!(
                    "unknown key `{path}` (known here: {})",
                    choices.join(", ")
                )));
            }
            Some(dv) => known(dv, v, &path)?,
        }
    }
    Ok(())
}

impl TrainConfig {
    /// Parses a recipe, checking every key; errors name the key (`optimizer.lr`).
    pub fn from_value(value: Value) -> Result<Self> {
        let defaults = serde_json::to_value(TrainConfig::default()).expect("defaults serialise");
        known(&defaults, &value, "")?;
        let config: TrainConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| TrainError::Config(format!("`{}`: {}", e.path(), e.inner())))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `configs/<name>.json` or any path, then applies `overrides` (`key=value`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let mut value: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
        apply_overrides(&mut value, overrides)?;
        Self::from_value(value).map_err(|e| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let err = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.data.inputs.is_empty() == self.data.shards.is_none() {
            return err("give exactly one of `data.inputs` (text files) or `data.shards` (a prepared directory)");
        }
        if self.optimizer.lr.is_nan() || self.optimizer.lr <= 0.0 {
            return err("`optimizer.lr` must be positive");
        }
        if self.schedule.min_lr < 0.0 || self.schedule.min_lr > self.optimizer.lr {
            return err("`schedule.min_lr` must be between 0 and `optimizer.lr`");
        }
        if self.schedule.max_steps == 0 {
            return err("`schedule.max_steps` must be positive");
        }
        if self.run.devices == 0 {
            return err("`run.devices` must be at least 1");
        }
        if self.run.batch_size == 0 {
            return err("`run.batch_size` must be positive");
        }
        if self.run.checkpoint_every == 0 || self.run.log_every == 0 {
            return err("`run.checkpoint_every` and `run.log_every` must be positive");
        }
        if self.run.keep_last == 0 {
            return err("`run.keep_last` must be at least 1");
        }
        if self.run.name.is_empty()
            || self.run.name.contains(['/', '\\'])
            || self.run.name.starts_with('.')
        {
            return err("`run.name` must be a plain directory name");
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return err("`data.val_fraction` must be in [0, 1)");
        }
        Ok(())
    }
}

/// Applies `key.path=value` overrides; the value is JSON if it parses, else a string.
pub fn apply_overrides(value: &mut Value, overrides: &[String]) -> Result<()> {
    let defaults = serde_json::to_value(TrainConfig::default()).expect("defaults serialise");
    for o in overrides {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| TrainError::Config(format!("override {o:?} is not `key=value`")))?;
        let parsed: Value =
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        // The key must exist in the schema, even if the file leaves it out.
        let mut schema = &defaults;
        for part in key.split('.') {
            schema = schema
                .get(part)
                .ok_or_else(|| TrainError::Config(format!("unknown key `{key}` in --set")))?;
        }
        let mut node = &mut *value;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            if !node.get(*part).is_some_and(Value::is_object) {
                node[*part] = Value::Object(Default::default());
            }
            node = node.get_mut(*part).expect("just ensured");
        }
        node[parts[parts.len() - 1]] = parsed;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"data": {"inputs": ["assets/data/the-verdict.txt"]}})
    }

    #[test]
    fn defaults_fill_the_gaps() {
        let c = TrainConfig::from_value(base()).unwrap();
        assert_eq!(c.optimizer.lr, 6e-4);
        assert_eq!(c.model.resolve(50257).unwrap().n_layer, 6);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let mut v = base();
        v["optimizer"] = json!({"lrr": 1e-3});
        let e = TrainConfig::from_value(v).unwrap_err().to_string();
        assert!(e.contains("optimizer.lrr"), "{e}");
        let mut v = base();
        v["schedule"] = json!({"max_steps": "many"});
        let e = TrainConfig::from_value(v).unwrap_err().to_string();
        assert!(e.contains("schedule.max_steps"), "{e}");
        let e = TrainConfig::from_value(json!({})).unwrap_err().to_string();
        assert!(e.contains("data.inputs"), "{e}");
    }

    #[test]
    fn overrides_apply_and_check_keys() {
        let mut v = base();
        apply_overrides(
            &mut v,
            &[
                "optimizer.lr=0.001".into(),
                "run.name=abc".into(),
                "model.preset=tiny".into(),
            ],
        )
        .unwrap();
        let c = TrainConfig::from_value(v).unwrap();
        assert_eq!((c.optimizer.lr, c.run.name.as_str()), (0.001, "abc"));
        assert_eq!(c.model.resolve(50257).unwrap().n_embd, 64);
        let mut v = base();
        let e = apply_overrides(&mut v, &["optimizer.nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("optimizer.nope"), "{e}");
        assert!(apply_overrides(&mut v, &["novalue".into()]).is_err());
    }
}
