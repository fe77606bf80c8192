//! `tokenize`, `detokenize` and `train-tokenizer`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use llm_bpe::{Allowed, Gpt2Tokenizer, TrainerConfig};

/// What to do with special-token text such as `<|endoftext|>` in the input.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SpecialPolicy {
    /// It is an error (tiktoken's default).
    Raise,
    /// It becomes the special token's id.
    Allow,
    /// It is encoded as ordinary text.
    Text,
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// `gpt2` (built in), a directory with vocab.json + merges.txt or tokenizer.json, or a
    /// tokenizer.json file.
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// The text to encode.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// A UTF-8 file to encode.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print `{"ids": [...], "count": N}` instead of comma-separated ids.
    #[arg(long)]
    json: bool,
    /// Special-token text in the input.
    #[arg(long, value_enum, default_value = "raise")]
    special: SpecialPolicy,
}

#[derive(Args)]
pub struct DetokenizeArgs {
    /// See `tokenize --help`.
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// Token ids, separated by commas or spaces: `--ids 15496,11,995`.
    #[arg(long, required = true, allow_hyphen_values = true)]
    ids: String,
}

#[derive(Args)]
pub struct TrainArgs {
    /// UTF-8 text files to learn from.
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Size of the vocabulary, including the 256 byte tokens and `<|endoftext|>`.
    #[arg(long)]
    vocab_size: usize,
    /// Where to write: a `.json` file path, or a directory (created if needed) to write
    /// `tokenizer.json` into.
    #[arg(long)]
    out: PathBuf,
    /// Never merge pairs seen fewer times than this.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
}

fn load_tokenizer(spec: &str) -> Result<Gpt2Tokenizer> {
    Gpt2Tokenizer::load(spec).with_context(|| format!("loading tokenizer {spec:?}"))
}

/// Reads a UTF-8 text file; an invalid file is reported with its path and byte offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 at byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.tokenizer)?;
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text(f)?,
        (None, None) => bail!("give --text or --file"),
    };
    let allowed = match args.special {
        SpecialPolicy::Raise => Allowed::None,
        SpecialPolicy::Allow => Allowed::All,
        SpecialPolicy::Text => Allowed::AsText,
    };
    let ids = tok
        .encode_parallel(&text, allowed)
        .context("use `--special allow` or `--special text` to accept special-token text")?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids, "count": ids.len() }));
    } else {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", list.join(","));
    }
    Ok(())
}

/// Parses `1,2,3` or `1 2 3`, naming the item that is not an id.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .with_context(|| format!("{p:?} is not a token id (expected a number ≥ 0)"))
        })
        .collect()
}

pub fn detokenize(args: DetokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.tokenizer)?;
    let ids = parse_ids(&args.ids)?;
    let text = tok.decode(&ids)?;
    println!("{text}");
    Ok(())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let texts = args
        .input
        .iter()
        .map(|p| read_text(p))
        .collect::<Result<Vec<_>>>()?;
    let out = if args.out.extension().is_some_and(|e| e == "json") {
        args.out.clone()
    } else {
        args.out.join("tokenizer.json")
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let config = TrainerConfig {
        vocab_size: args.vocab_size,
        min_frequency: args.min_frequency,
        ..TrainerConfig::new(args.vocab_size)
    };
    let start = Instant::now();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = llm_bpe::train(&refs, &config)?;
    let elapsed = start.elapsed();
    tok.save_tokenizer_json(&out)?;

    let bytes: usize = texts.iter().map(String::len).sum();
    let tokens: usize = refs.iter().map(|t| tok.encode_ordinary(t).len()).sum();
    println!(
        "trained {} tokens on {:.1} MB in {:.1}s: {:.2} bytes per token on the training text",
        tok.vocab_size(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        bytes as f64 / tokens.max(1) as f64
    );
    println!("saved {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_commas_or_spaces() {
        assert_eq!(parse_ids("1,2, 3 4").unwrap(), [1, 2, 3, 4]);
        let err = parse_ids("1,x,3").unwrap_err();
        assert!(err.to_string().contains("\"x\""));
        assert!(parse_ids("-1").is_err());
    }
}
