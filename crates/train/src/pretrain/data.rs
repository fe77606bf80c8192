//! Where pre-training's tokens come from: the tokenizer, and either a prepared directory or
//! input files tokenized into the run directory; and what the recipe resolves to.

use std::path::PathBuf;

use llm_bpe::Tokenizer;
use llm_data::{Manifest, PrepareConfig};
use llm_model::Gpt2Config;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::run::RunDir;

/// Where the tokens come from, checked before anything is written: the tokenizer, and
/// either a prepared directory or the input files.
pub(super) struct DataSource {
    pub(super) tokenizer: Tokenizer,
    pub(super) tokenizer_name: String,
    shards: Option<PathBuf>,
    files: Vec<PathBuf>,
}

/// The prepared tokens a run trains on, and their tokenizer.
pub(super) struct Data {
    pub(super) dir: PathBuf,
    pub(super) tokenizer: Tokenizer,
    pub(super) tokenizer_name: String,
}

impl DataSource {
    pub(super) fn open(config: &TrainConfig) -> Result<Self> {
        let d = &config.data;
        if let Some(dir) = &d.shards {
            if !dir.join("manifest.json").is_file() {
                return Err(TrainError::key(
                    "data.shards",
                    format!(
                        "{} holds no prepared corpus (no manifest.json); make it with \
                         `cargo xtask prepare --input <files> --out {}`",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
            let manifest = Manifest::load(dir)?;
            return Ok(DataSource {
                tokenizer: Tokenizer::load(&manifest.tokenizer.name)?,
                tokenizer_name: manifest.tokenizer.name,
                shards: Some(dir.clone()),
                files: Vec::new(),
            });
        }
        let inputs = llm_data::hub::resolve_inputs(&d.inputs)?;
        let files = llm_data::text::collect_inputs(&inputs)?;
        if files.is_empty() {
            return Err(TrainError::key(
                "data.inputs",
                format!("no {} files in the given paths", llm_data::text::FORMATS),
            ));
        }
        Ok(DataSource {
            tokenizer: Tokenizer::load(&d.tokenizer)?,
            tokenizer_name: d.tokenizer.clone(),
            shards: None,
            files,
        })
    }

    /// The prepared directory: `data.shards`, or `data.inputs` tokenized into the run
    /// directory (unless the same inputs are already there).
    /// Also returns what it did, to print.
    pub(super) fn prepare(self, config: &TrainConfig, run: &RunDir) -> Result<(Data, Vec<String>)> {
        let mut said = Vec::new();
        let dir = match self.shards {
            Some(dir) => dir,
            None => {
                let d = &config.data;
                let dir = run.data_dir();
                let wanted = llm_data::input_list(&self.files)?;
                let current = Manifest::load(&dir).ok().filter(|m| {
                    m.inputs == wanted
                        && m.tokenizer.name == d.tokenizer
                        && m.val_fraction == d.val_fraction
                });
                if current.is_none() {
                    let prep = PrepareConfig {
                        val_fraction: d.val_fraction,
                        shard_tokens: 100_000_000,
                        text_field: d.text_field.clone(),
                    };
                    let report = llm_data::prepare(
                        &self.files,
                        &dir,
                        &self.tokenizer,
                        &d.tokenizer,
                        &prep,
                        &|_, _| {},
                    )?;
                    said.push(format!(
                        "prepared {} tokens ({} train, {} val) into {}",
                        report.tokens,
                        report.manifest.train.tokens,
                        report.manifest.val.tokens,
                        dir.display()
                    ));
                }
                dir
            }
        };
        let data = Data {
            dir,
            tokenizer: self.tokenizer,
            tokenizer_name: self.tokenizer_name,
        };
        Ok((data, said))
    }
}

/// What the recipe resolves to for this tokenizer.
pub(super) struct Plan {
    pub(super) model: Gpt2Config,
    pub(super) seq_len: usize,
}

impl Plan {
    pub(super) fn new(config: &TrainConfig, vocab_size: usize) -> Result<Plan> {
        let model = config.model.resolve(vocab_size)?;
        let seq_len = config.seq_len(&model)?;
        Ok(Plan { model, seq_len })
    }
}
