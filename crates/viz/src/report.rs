//! `viz attention`: run the model once on the input, then write `attention.json`, the
//! heatmaps, the page and `summary.json` into one directory.

use std::path::{Path, PathBuf};

use llm_bpe::{Allowed, Tokenizer};
use llm_model::{Gpt, KernelBackend};

use crate::attention::{
    attention_by_layer, resolve_heads, token_strings, AttentionFile, LayerChoice, ModelShape,
};
use crate::error::{Result, VizError};
use crate::heatmap::{head_png, layer_png};
use crate::output::write;
use crate::page::{attention_page, PAGE_TOKENS};
use crate::summary::{summarize, Summary};

/// What the model reads.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Text, encoded with the model's tokenizer; `<|endoftext|>` is the special token.
    Text(String),
    Ids(Vec<u32>),
}

/// Which layers and heads to write, and how.
#[derive(Clone, Debug)]
pub struct AttentionOptions {
    pub layer: LayerChoice,
    /// Heads to write (all when empty).
    pub heads: Vec<usize>,
    /// The page shows at most this many tokens.
    pub page_tokens: usize,
    /// Seed of the induction probe's random tokens.
    pub induction_seed: u64,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions {
            layer: LayerChoice::default(),
            heads: Vec::new(),
            page_tokens: PAGE_TOKENS,
            induction_seed: 0,
        }
    }
}

/// The attention of the chosen layers and heads, and every head's scores.
#[derive(Clone, Debug)]
pub struct AttentionReport {
    pub file: AttentionFile,
    pub summary: Summary,
}

/// Runs `model` on `prompt` and gathers what [`write_report`] writes. A prompt longer than
/// the model's context (`n_positions`) is an error, not silently cut.
pub fn analyse<B: KernelBackend>(
    model: &Gpt<B>,
    tokenizer: &Tokenizer,
    name: &str,
    prompt: &Prompt,
    options: &AttentionOptions,
    device: &B::Device,
) -> Result<AttentionReport> {
    let shape = ModelShape::of(name, model);
    let layers = options.layer.resolve(shape.n_layer)?;
    let heads = resolve_heads(&options.heads, shape.n_head)?;
    let (text, ids) = prompt_ids(tokenizer, prompt, shape.n_positions)?;
    let tokens = token_strings(tokenizer, &ids)?;
    let all = attention_by_layer(model, &ids, device)?;
    let summary = summarize(model, &shape, &all, options.induction_seed, device)?;
    let file = AttentionFile::select(shape, text, tokens, ids, &all, layers, heads);
    Ok(AttentionReport { file, summary })
}

fn prompt_ids(
    tokenizer: &Tokenizer,
    prompt: &Prompt,
    n_positions: usize,
) -> Result<(Option<String>, Vec<u32>)> {
    let (text, ids, what) = match prompt {
        Prompt::Text(text) => {
            let ids = (tokenizer.encode_with(text, Allowed::All))
                .map_err(|e| VizError::Input(format!("encoding --text: {e}")))?;
            (Some(text.clone()), ids, "--text")
        }
        Prompt::Ids(ids) => (None, ids.clone(), "--prompt-ids"),
    };
    if ids.is_empty() {
        return Err(VizError::Input(format!("{what} holds no tokens")));
    }
    if ids.len() > n_positions {
        return Err(VizError::Input(format!(
            "{what} is {} tokens, but the model's context holds {n_positions} (n_positions): shorten it",
            ids.len()
        )));
    }
    Ok((text, ids))
}

/// Writes `attention.json`, `summary.json`, `layer-L.png`, `layer-L-head-H.png` and
/// `attention.html` into `dir` (created if needed), each atomically. Returns their paths.
pub fn write_report(
    report: &AttentionReport,
    dir: &Path,
    page_tokens: usize,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| VizError::io(dir, e))?;
    let file = &report.file;
    let mut written = vec![
        write(dir, "attention.json", &to_json(file)?)?,
        write(dir, "summary.json", &to_json(&report.summary)?)?,
    ];
    for (i, &layer) in file.layers.iter().enumerate() {
        let heads: Vec<_> = file.heads.iter().copied().zip(&file.attention[i]).collect();
        let caption = format!("{}: layer {layer}", file.model.name);
        written.push(write(
            dir,
            &format!("layer-{layer}.png"),
            &layer_png(&heads, &file.tokens, &caption)?,
        )?);
        for (head, matrix) in heads {
            let title = format!(
                "{}: layer {layer}, head {head} (each row attends to the columns)",
                file.model.name
            );
            let (png, _) = head_png(matrix, &file.tokens, &title)?;
            written.push(write(dir, &format!("layer-{layer}-head-{head}.png"), &png)?);
        }
    }
    let page = attention_page(file, &report.summary.heads, page_tokens)?;
    written.push(write(dir, "attention.html", page.as_bytes())?);
    Ok(written)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| VizError::draw("JSON", e))
}
