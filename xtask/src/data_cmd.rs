//! `prepare`, `data-stats` and `download --dataset`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use llm_bpe::Tokenizer;
use llm_data::hub::{resolve_inputs, DatasetHub, DatasetPath};
use llm_data::text::{collect_inputs, documents};
use llm_data::{Manifest, PrepareConfig, ShardSet, TokenStats};

#[derive(Args)]
pub struct PrepareArgs {
    /// Corpus files or directories: `.txt` (one document per file) and `.jsonl` (one per
    /// line), optionally `.gz`, and `.parquet` (one per row); or `hf://datasets/ORG/NAME[/DIR]`,
    /// a dataset in the Hugging Face cache (`cargo xtask download --dataset` puts it there).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output directory for the shards and manifest.json.
    #[arg(long)]
    out: PathBuf,
    /// `gpt2` or a tokenizer directory / tokenizer.json.
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// Share of the data for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Tokens per shard.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: usize,
    /// The field (`.jsonl`) or column (`.parquet`) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn prepare(args: PrepareArgs) -> Result<()> {
    let inputs = resolve_inputs(&args.input)?;
    let tok = Tokenizer::load(&args.tokenizer)
        .with_context(|| format!("loading tokenizer {:?}", args.tokenizer))?;
    let config = PrepareConfig {
        val_fraction: args.val_fraction,
        shard_tokens: args.shard_tokens,
        text_field: args.text_field.clone(),
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} tokenizing [{bar:30}] {pos}/{len} documents, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let start = Instant::now();
    let report = pool.install(|| {
        llm_data::prepare(
            &inputs,
            &args.out,
            &tok,
            &args.tokenizer,
            &config,
            &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
    });
    bar.finish_and_clear();
    let report = report?;
    let secs = start.elapsed().as_secs_f64();
    let m = &report.manifest;
    println!(
        "{} documents, {:.2} MB of text → {} tokens (train {} in {} shard(s), val {} in {}), split by {}",
        m.documents,
        report.text_bytes as f64 / 1e6,
        report.tokens,
        m.train.tokens,
        m.train.shards.len(),
        m.val.tokens,
        m.val.shards.len(),
        m.split_method
    );
    if !report.removed.is_empty() {
        println!(
            "removed {} shard(s) of an earlier preparation that the new manifest does not list: {}",
            report.removed.len(),
            report.removed.join(", ")
        );
    }
    println!(
        "{:.1}s on {} thread(s): {:.1} MB/s of text, {:.2} M tokens/s; wrote {}",
        secs,
        pool.current_num_threads(),
        report.text_bytes as f64 / 1e6 / secs,
        report.tokens as f64 / 1e6 / secs,
        args.out.join("manifest.json").display()
    );
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    /// Corpus files or directories (as `prepare` takes them, `hf://datasets/…` included), or
    /// a directory made by `prepare` (with manifest.json).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Tokenizer for text inputs (a prepared directory names its own).
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// The field (`.jsonl`) or column (`.parquet`) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// How many of the most frequent tokens to show.
    #[arg(long, default_value_t = 15)]
    top_k: usize,
    /// How many (input → target) examples to show.
    #[arg(long, default_value_t = 4)]
    samples: usize,
}

/// All tokens of the inputs: a prepared directory's train and val shards, or tokenized text.
fn load_tokens(args: &StatsArgs) -> Result<(Vec<u32>, Tokenizer, String)> {
    if let [dir] = args.input.as_slice() {
        if dir.join("manifest.json").is_file() {
            let manifest = Manifest::load(dir)?;
            let tok = Tokenizer::load(&manifest.tokenizer.name).with_context(|| {
                format!(
                    "loading the dataset's tokenizer {:?}",
                    manifest.tokenizer.name
                )
            })?;
            let mut tokens = Vec::new();
            for split in ["train", "val"] {
                let mut set = ShardSet::open(dir, split)?;
                for (i, n) in set.shard_lens().into_iter().enumerate() {
                    set.read(i, 0, n, &mut tokens)?;
                }
            }
            return Ok((tokens, tok, format!("prepared dataset {}", dir.display())));
        }
    }
    let tok = Tokenizer::load(&args.tokenizer)
        .with_context(|| format!("loading tokenizer {:?}", args.tokenizer))?;
    let files = collect_inputs(&resolve_inputs(&args.input)?)?;
    let mut tokens = Vec::new();
    for doc in documents(&files, &args.text_field) {
        let doc = doc?;
        if !tokens.is_empty() {
            if let Some(eot) = tok.eot_id() {
                tokens.push(eot);
            }
        }
        tokens.extend(tok.encode_parallel(&doc.text, llm_bpe::Allowed::AsText)?);
    }
    Ok((tokens, tok, format!("{} file(s)", files.len())))
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let (tokens, tok, what) = load_tokens(&args)?;
    anyhow::ensure!(!tokens.is_empty(), "the input holds no tokens");
    let s = TokenStats::compute(&tokens, tok.vocab_size(), args.top_k);
    println!(
        "{what}, tokenizer {} ({} tokens)",
        tok.name(),
        tok.vocab_size()
    );
    println!("tokens:          {}", s.tokens);
    println!("unique tokens:   {}", s.unique);
    println!(
        "vocab coverage:  {:.1}% of the vocabulary occurs",
        100.0 * s.coverage()
    );
    println!("\ntop {} tokens:", s.top.len());
    for (id, count) in &s.top {
        let text = tok.decode(&[*id]).unwrap_or_default();
        println!(
            "  {id:>6}  {:>6.2}%  {text:?}",
            100.0 * *count as f64 / s.tokens as f64
        );
    }
    println!("\n(input → target) pairs, as the model sees them:");
    let n = tokens.len();
    for k in 0..args.samples {
        let start = (n / (args.samples + 1)) * (k + 1);
        for len in 1..=4.min(n - start - 1) {
            let context = &tokens[start..start + len];
            let target = tokens[start + len];
            println!(
                "  {:?} → {target}    {:?} → {:?}",
                context,
                tok.decode(context).unwrap_or_default(),
                tok.decode(&[target]).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `download --dataset REPO [--name DIR] [--max-files N]`: Parquet files into the hub cache.
pub fn download_dataset(repo: &str, name: Option<&str>, max_files: Option<usize>) -> Result<()> {
    let hub = DatasetHub::from_env()?;
    let dataset = DatasetPath::new(repo, name)?;
    let paths = hub.download(&dataset, max_files, true)?;
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    for p in &paths {
        println!("{}", p.display());
    }
    println!(
        "{dataset}: {} Parquet file(s), {:.1} MB, cached in {}; prepare them with --input {dataset}",
        paths.len(),
        bytes as f64 / 1e6,
        hub.cache_dir().display()
    );
    Ok(())
}
