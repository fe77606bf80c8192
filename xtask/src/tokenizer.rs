//! `tokenize`, `detokenize` and `train-tokenizer`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use llm_bpe::{Allowed, Tokenizer, TrainerConfig};

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

impl SpecialPolicy {
    /// Encodes `text` under this policy; refused special-token text names the flag.
    pub fn encode(self, tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        let allowed = match self {
            SpecialPolicy::Raise => Allowed::None,
            SpecialPolicy::Allow => Allowed::All,
            SpecialPolicy::Text => Allowed::AsText,
        };
        tok.encode_parallel(text, allowed).map_err(|e| match e {
            llm_bpe::BpeError::DisallowedSpecial { .. } => anyhow::anyhow!(
                "{e}; pass `--special allow` to encode it as the special token, or `--special text` to encode it as ordinary text"
            ),
            other => other.into(),
        })
    }
}

#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file"])))]
pub struct TokenizeArgs {
    /// `gpt2` (built in), a directory with vocab.json + merges.txt or tokenizer.json, or a
    /// tokenizer.json file.
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// The text to encode.
    #[arg(long)]
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

fn load_tokenizer(spec: &str) -> Result<Tokenizer> {
    Tokenizer::load(spec).with_context(|| format!("loading tokenizer {spec:?}"))
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
    let ids = args.special.encode(&tok, &text)?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids, "count": ids.len() }));
    } else {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", list.join(","));
    }
    Ok(())
}

/// Parses the token ids given to `flag`: separated by commas and/or spaces
/// (`15496,11,995` or `15496 11 995`). No ids at all, an empty entry (`1,,2`) and anything
/// that is not an id are errors that name the flag and the entry.
pub fn parse_ids(flag: &str, s: &str) -> Result<Vec<u32>> {
    if s.trim().is_empty() {
        bail!("{flag}: no token ids given (expected e.g. `{flag} 15496,11,995`)");
    }
    let mut ids = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        let words: Vec<&str> = entry.split_whitespace().collect();
        if words.is_empty() {
            bail!(
                "{flag}: entry {} of {s:?} is empty (two commas in a row, or a comma at an end)",
                i + 1
            );
        }
        for w in words {
            let id = w.parse::<u32>().with_context(|| {
                format!("{flag}: {w:?} is not a token id (expected a number ≥ 0)")
            })?;
            ids.push(id);
        }
    }
    Ok(ids)
}

pub fn detokenize(args: DetokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&args.tokenizer)?;
    let ids = parse_ids("--ids", &args.ids)?;
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
        assert_eq!(parse_ids("--ids", "1,2, 3 4").unwrap(), [1, 2, 3, 4]);
        let err = parse_ids("--ids", "1,x,3").unwrap_err();
        assert!(err.to_string().contains("\"x\""));
        assert!(parse_ids("--ids", "-1").is_err());
        for bad in ["", "  ", "1,,2", "1,2,", ",1"] {
            let err = format!("{:#}", parse_ids("--ids", bad).unwrap_err());
            assert!(err.starts_with("--ids:"), "{bad:?}: {err}");
        }
    }
}
