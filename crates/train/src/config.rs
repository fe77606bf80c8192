//! Run recipes: model + data + optimizer + schedule + run settings, read from
//! `configs/*.json`, with `--set key=value` overrides on top. Unknown keys and bad values
//! are errors that name the key.

use std::path::{Path, PathBuf};

use llm_data::BatchOrder;
use llm_model::Gpt2Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// The model to train: a preset, with any [`Gpt2Config`] field set on top of it
/// (`model.n_layer`, `model.n_positions`, …), and `dropout` for every dropout probability at
/// once. The fields are `Gpt2Config`'s own: this section names them, it does not mirror them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `tiny`, `mini` or `small` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Every dropout probability at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// `Gpt2Config` fields; `vocab_size` defaults to the tokenizer's.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}

impl ModelConfig {
    /// Every key this section takes, with its default (for key checks and `--set`).
    fn schema() -> Value {
        let mut v = serde_json::to_value(Gpt2Config::small()).expect("config serialises");
        v["preset"] = Value::Null;
        v["dropout"] = Value::Null;
        v
    }

    /// The section that resolves to exactly `config` (for the run's `config.json`).
    pub fn spelled_out(config: &Gpt2Config) -> Self {
        let Value::Object(fields) = serde_json::to_value(config).expect("config serialises") else {
            unreachable!("a config serialises to an object")
        };
        ModelConfig {
            preset: None,
            dropout: None,
            fields,
        }
    }

    /// The full model config, for a tokenizer of `vocab_size` tokens.
    pub fn resolve(&self, vocab_size: usize) -> Result<Gpt2Config> {
        let preset = Gpt2Config::preset(self.preset.as_deref().unwrap_or("small"))
            .map_err(|e| TrainError::key("model.preset", e.to_string()))?;
        if let Some(p) = self.dropout.filter(|p| !(0.0..1.0).contains(p)) {
            return Err(TrainError::key(
                "model.dropout",
                format!("must be in [0, 1), got {p}"),
            ));
        }
        let mut value =
            serde_json::to_value(preset.with_vocab_size(vocab_size)).expect("config serialises");
        for (k, v) in &self.fields {
            match value.get_mut(k) {
                Some(slot) => *slot = v.clone(),
                None => return Err(TrainError::key(format!("model.{k}"), "unknown key")),
            }
        }
        let mut c: Gpt2Config = serde_path_to_error::deserialize(value)
            .map_err(|e| TrainError::key(format!("model.{}", e.path()), e.inner().to_string()))?;
        if let Some(p) = self.dropout {
            c = c.with_dropout(p);
        }
        c.validate().map_err(|e| match e {
            llm_model::ModelError::Config(m) => TrainError::key("model", m),
            other => TrainError::key("model", other.to_string()),
        })?;
        if c.vocab_size < vocab_size {
            return Err(TrainError::key(
                "model.vocab_size",
                format!(
                    "{} is smaller than the tokenizer's {vocab_size}",
                    c.vocab_size
                ),
            ));
        }
        Ok(c)
    }
}

/// Where the tokens come from: text to prepare, or shards made by `cargo xtask prepare`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `.txt` / `.jsonl` / `.parquet` files (or directories, or `hf://datasets/ORG/NAME[/DIR]`
    /// in the hub cache), tokenized into the run directory on first use. Relative paths are
    /// relative to the working directory.
    pub inputs: Vec<PathBuf>,
    /// A directory made by `cargo xtask prepare` (instead of `inputs`).
    pub shards: Option<PathBuf>,
    /// Tokenizer for `inputs`: `gpt2`, a directory or a tokenizer.json.
    pub tokenizer: String,
    pub val_fraction: f64,
    /// The JSON field or Parquet column holding the text.
    pub text_field: String,
    /// `random` windows (nanoGPT) or `sequential` (llm.c); `sampling` in older recipes.
    #[serde(alias = "sampling")]
    pub batch_order: BatchOrder,
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
            batch_order: BatchOrder::Random,
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
    /// A multiple-choice file scored at every evaluation (HellaSwag's `hellaswag_val.jsonl`,
    /// or anything `cargo xtask eval-mc` reads): logs `mc_acc` and `mc_acc_norm`.
    pub mc_eval_file: Option<PathBuf>,
    /// Score only the file's first N items (all of them when unset).
    pub mc_eval_items: Option<usize>,
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
            mc_eval_file: None,
            mc_eval_items: None,
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

/// What the spike guard does with an outlier step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    /// No guard (the default).
    #[default]
    Off,
    /// Drop the step's update (the data is still consumed) and go on.
    Skip,
    /// End the run with an error naming the last good checkpoint.
    Stop,
}

/// A guard against loss and gradient-norm spikes, after llm.c's outlier detector: a step
/// whose loss or gradient norm lies more than `loss_z` / `grad_z` standard deviations
/// above the mean of the last `window` steps is skipped or stops the run. It acts once the
/// window is full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    pub action: GuardAction,
    pub window: usize,
    /// z-score above which a loss is a spike; 0 turns the loss check off.
    pub loss_z: f64,
    /// z-score above which a gradient norm is a spike; 0 turns that check off.
    pub grad_z: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            action: GuardAction::Off,
            window: 128,
            loss_z: 5.0,
            grad_z: 5.0,
        }
    }
}

/// What the loop itself takes from a recipe, whatever the task.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopConfig {
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub run: RunConfig,
    pub guard: GuardConfig,
}

impl LoopConfig {
    /// Checks the sections every task shares: optimizer, schedule, run and guard.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, m: &str| Err(TrainError::key(key, m));
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optimizer.lr", "must be a positive number");
        }
        for (key, beta) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(key, "must be in [0, 1)");
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad("optimizer.eps", "must be a positive number");
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad("optimizer.weight_decay", "must be a number ≥ 0");
        }
        if !(o.grad_clip.is_finite() && o.grad_clip >= 0.0) {
            return bad(
                "optimizer.grad_clip",
                "must be a number ≥ 0 (0 turns clipping off)",
            );
        }
        if !(self.schedule.min_lr >= 0.0 && self.schedule.min_lr <= o.lr) {
            return bad("schedule.min_lr", "must be between 0 and `optimizer.lr`");
        }
        if self.schedule.max_steps == 0 {
            return bad("schedule.max_steps", "must be positive");
        }
        if self.schedule.decay_steps == Some(0) {
            return bad("schedule.decay_steps", "must be positive (or left out)");
        }
        self.validate_run()?;
        self.validate_guard()
    }

    fn validate_run(&self) -> Result<()> {
        let bad = |key: &str, m: &str| Err(TrainError::key(key, m));
        let r = &self.run;
        for (key, v) in [
            ("run.devices", r.devices),
            ("run.batch_size", r.batch_size),
            ("run.checkpoint_every", r.checkpoint_every),
            ("run.log_every", r.log_every),
            ("run.keep_last", r.keep_last),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if r.tokens_per_step == Some(0) {
            return bad("run.tokens_per_step", "must be positive (or left out)");
        }
        if r.mc_eval_items == Some(0) {
            return bad(
                "run.mc_eval_items",
                "must be positive (or left out for all items)",
            );
        }
        if r.name.is_empty() || r.name.contains(['/', '\\']) || r.name.starts_with('.') {
            return bad("run.name", "must be a plain directory name");
        }
        if !(r.sample_temperature.is_finite() && r.sample_temperature >= 0.0) {
            return bad(
                "run.sample_temperature",
                "must be a number ≥ 0 (0 is greedy)",
            );
        }
        if r.sample_top_k == Some(0) {
            return bad(
                "run.sample_top_k",
                "must be at least 1 (or null for no top-k)",
            );
        }
        Ok(())
    }

    fn validate_guard(&self) -> Result<()> {
        let g = &self.guard;
        if g.window < 2 {
            return Err(TrainError::key("guard.window", "must be at least 2 steps"));
        }
        for (key, z) in [("guard.loss_z", g.loss_z), ("guard.grad_z", g.grad_z)] {
            if !(z.is_finite() && z >= 0.0) {
                return Err(TrainError::key(
                    key,
                    "must be a number ≥ 0 (0 turns it off)",
                ));
            }
        }
        Ok(())
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
    pub guard: GuardConfig,
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
                return Err(TrainError::key(
                    path,
                    format!("unknown key (known here: {})", choices.join(", ")),
                ));
            }
            Some(dv) => known(dv, v, &path)?,
        }
    }
    Ok(())
}

impl TrainConfig {
    /// The loop's part of the recipe.
    pub fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            run: self.run.clone(),
            guard: self.guard.clone(),
        }
    }

    /// Every key a recipe takes, with its default.
    fn schema() -> Value {
        let mut v = serde_json::to_value(TrainConfig::default()).expect("defaults serialise");
        v["model"] = ModelConfig::schema();
        v
    }

    /// Parses a recipe, checking every key and value; errors name the key
    /// ([`TrainError::Key`], e.g. `optimizer.lr`).
    pub fn from_value(value: Value) -> Result<Self> {
        let config: TrainConfig = parse_recipe(value, &TrainConfig::schema())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `configs/<name>.json` or any path, then applies `overrides` (`key=value`). A bad
    /// value is blamed on the `--set` that gave it, or else on the file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let config: TrainConfig = load_recipe(path, overrides, Self::schema())?;
        config
            .validate()
            .map_err(|e| e.with_origin(path, overrides))?;
        Ok(config)
    }

    /// Checks what serde cannot: every value, and the model's shape (with a placeholder
    /// vocabulary: the tokenizer's size is only known once it is loaded).
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, m: &str| Err(TrainError::key(key, m));
        if self.data.inputs.is_empty() == self.data.shards.is_none() {
            return bad(
                "data",
                "give exactly one of `data.inputs` (text files) or `data.shards` (a prepared directory)",
            );
        }
        self.loop_config().validate()?;
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return bad("data.val_fraction", "must be in [0, 1)");
        }
        let vocab_size = self.model.fields.get("vocab_size").and_then(Value::as_u64);
        let model = self.model.resolve(vocab_size.unwrap_or(1) as usize)?;
        self.seq_len(&model)?;
        Ok(())
    }

    /// Tokens per training row: `data.seq_len`, by default the model's context.
    pub fn seq_len(&self, model: &Gpt2Config) -> Result<usize> {
        let seq_len = self.data.seq_len.unwrap_or(model.n_positions);
        if seq_len == 0 || seq_len > model.n_positions {
            return Err(TrainError::key(
                "data.seq_len",
                format!(
                    "{seq_len} must be between 1 and the model's n_positions {}",
                    model.n_positions
                ),
            ));
        }
        Ok(seq_len)
    }
}

/// Parses a recipe against `schema` (every key with its default): an unknown key or a bad
/// value is an error naming the key.
fn parse_recipe<T: serde::de::DeserializeOwned>(value: Value, schema: &Value) -> Result<T> {
    known(schema, &value, "")?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| TrainError::key(e.path().to_string(), e.inner().to_string()))
}

/// Reads a recipe file, applies `overrides` and parses it against `schema`; a bad key or
/// value is blamed on the `--set` that gave it, or else on the file.
pub(crate) fn load_recipe<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
    schema: Value,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut value: Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    apply_overrides_to(&mut value, overrides, &schema)?;
    parse_recipe(value, &schema).map_err(|e| e.with_origin(path, overrides))
}

impl TrainError {
    /// A key error without an origin gets one: the `--set` that gave the key, else `path`.
    pub(crate) fn with_origin(self, path: &Path, overrides: &[String]) -> Self {
        match self {
            TrainError::Key {
                key,
                message,
                origin: None,
            } => {
                let origin = blame(&key, overrides).unwrap_or_else(|| path.display().to_string());
                TrainError::Key {
                    key,
                    message,
                    origin: Some(origin),
                }
            }
            other => other,
        }
    }
}

/// The `--set` overrides that gave `key` (or a key inside it, or the object around it).
fn blame(key: &str, overrides: &[String]) -> Option<String> {
    let related = |k: &str| {
        k == key || k.starts_with(&format!("{key}.")) || key.starts_with(&format!("{k}."))
    };
    let hits: Vec<String> = overrides
        .iter()
        .filter(|o| related(o.split_once('=').map_or(o.as_str(), |(k, _)| k)))
        .map(|o| format!("--set {o}"))
        .collect();
    (!hits.is_empty()).then(|| hits.join(", "))
}

/// Applies `key.path=value` overrides; the value is JSON if it parses, else a string.
pub fn apply_overrides(value: &mut Value, overrides: &[String]) -> Result<()> {
    apply_overrides_to(value, overrides, &TrainConfig::schema())
}

fn apply_overrides_to(value: &mut Value, overrides: &[String], defaults: &Value) -> Result<()> {
    for o in overrides {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| TrainError::Config(format!("--set {o:?} is not `key=value`")))?;
        let parsed: Value =
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        // The key must exist in the schema, even if the file leaves it out.
        let mut schema = defaults;
        for part in key.split('.') {
            schema = schema.get(part).ok_or_else(|| TrainError::Key {
                key: key.to_string(),
                message: "unknown key".into(),
                origin: Some(format!("--set {o}")),
            })?;
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
    fn a_bad_value_is_blamed_on_the_set_that_gave_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recipe.json");
        std::fs::write(&file, base().to_string()).unwrap();
        let e = TrainConfig::load(&file, &["optimizer.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set optimizer.lr=-1") && !e.contains("recipe.json"),
            "{e}"
        );
        let e = TrainConfig::load(&file, &["model.n_head=5".into(), "run.seed=3".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set model.n_head=5") && !e.contains("run.seed"),
            "{e}"
        );
        assert!(e.contains("n_head (5)"), "{e}");
        let e = TrainConfig::load(&file, &["model.dropout=1.5".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set model.dropout=1.5") && e.contains("[0, 1)"),
            "{e}"
        );
        let mut v = base();
        v["optimizer"] = json!({"lr": -1});
        std::fs::write(&file, v.to_string()).unwrap();
        let e = TrainConfig::load(&file, &[]).unwrap_err().to_string();
        assert!(
            e.contains("recipe.json") && e.contains("optimizer.lr"),
            "{e}"
        );
        // The whole config is checked up front, the sequence length against the context too.
        let mut v = base();
        v["data"]["seq_len"] = json!(300);
        let e = TrainConfig::from_value(v).unwrap_err().to_string();
        assert!(e.contains("data.seq_len") && e.contains("256"), "{e}");
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
