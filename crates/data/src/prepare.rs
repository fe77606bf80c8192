//! `prepare`: corpus files → tokenized, versioned shards with a manifest.
//!
//! 1. Documents are read lazily (a `.txt` file is one, a `.jsonl` line or a `.parquet` row
//!    is one) and tokenized in parallel, a batch of documents at a time while the next batch
//!    is read, so memory stays bounded by two batches.
//! 2. Each document goes to the train or the validation split, `<|endoftext|>` between
//!    documents. With many documents (≥ 100) whole documents are assigned, by a seeded hash
//!    of their index; with few (a book or two), each document is cut, its first
//!    `1 − val_fraction` to train and the rest to validation, so both splits see every one.
//! 3. Tokens stream into shards of `shard_tokens` (`train_000000.bin`, …, `val_000000.bin`)
//!    written atomically, then `manifest.json` lists the tokenizer, the counts and a SHA-256
//!    of every shard. Nothing depends on time or thread count: the output is byte-identical
//!    on every run.

use std::path::{Path, PathBuf};

use llm_bpe::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::parquet::ParquetDocuments;
use crate::shard::{is_shard_name, ShardWriter, TokenType};
use crate::split::check_fraction;
use crate::text::{
    collect_inputs, documents, format_of, Document, Format, JsonlDocuments, FORMATS,
};

/// The manifest format written by this version.
pub const MANIFEST_VERSION: u32 = 1;
/// With at least this many documents, the split assigns whole documents.
pub const DOC_SPLIT_MIN_DOCS: usize = 100;
const SPLIT_SEED: u64 = 0x5EED_5EED;
/// Documents at least this long are tokenized with all threads on their own.
const LONG_DOC: usize = 1 << 20;
/// Text per tokenization batch.
const BATCH_BYTES: usize = 32 << 20;

/// Settings of [`prepare`].
#[derive(Clone, Debug)]
pub struct PrepareConfig {
    pub val_fraction: f64,
    pub shard_tokens: usize,
    /// JSON field holding the text in `.jsonl` inputs.
    pub text_field: String,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            val_fraction: 0.1,
            shard_tokens: 100_000_000,
            text_field: "text".into(),
        }
    }
}

/// One shard in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name, relative to the manifest.
    pub file: String,
    pub tokens: usize,
    pub sha256: String,
}

/// A split in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitEntry {
    pub tokens: usize,
    pub shards: Vec<ShardEntry>,
}

/// The tokenizer a dataset was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerEntry {
    pub name: String,
    pub vocab_size: usize,
    pub eot_id: Option<u32>,
}

/// `manifest.json`: what a prepared dataset holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub tokenizer: TokenizerEntry,
    pub token_type: TokenType,
    /// `documents` (whole documents to validation) or `within-documents` (each one cut).
    pub split_method: String,
    pub val_fraction: f64,
    pub documents: usize,
    /// Input files (names only) and their sizes in bytes.
    pub inputs: Vec<(String, u64)>,
    pub train: SplitEntry,
    pub val: SplitEntry,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| DataError::file(&path, format!("not a valid manifest: {e}")))?;
        if m.version != MANIFEST_VERSION {
            return Err(DataError::file(
                &path,
                format!(
                    "manifest version {} is not supported (expected {MANIFEST_VERSION})",
                    m.version
                ),
            ));
        }
        Ok(m)
    }

    /// A split by name: `train` or `val`.
    pub fn split(&self, name: &str) -> Result<&SplitEntry> {
        match name {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            other => Err(DataError::Invalid(format!(
                "unknown split {other:?} (train or val)"
            ))),
        }
    }
}

/// What [`prepare`] did.
#[derive(Clone, Debug)]
pub struct PrepareReport {
    pub manifest: Manifest,
    /// Input file sizes, summed (compressed, for `.gz` and Parquet).
    pub bytes: u64,
    /// UTF-8 text tokenized: what throughput is measured in.
    pub text_bytes: u64,
    pub tokens: usize,
    /// Shards of an earlier preparation into the same directory that the new manifest does
    /// not list, now deleted.
    pub removed: Vec<String>,
}

/// Progress of [`prepare`], in documents: `(done, total)`.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

fn count_documents(files: &[PathBuf], field: &str) -> Result<usize> {
    let mut n = 0;
    for f in files {
        n += match format_of(f) {
            Some(Format::Text) => 1,
            Some(Format::Jsonl) => JsonlDocuments::open(f, field)?.count(),
            // The footer's row count; the text column is checked now, before any work.
            Some(Format::Parquet) => ParquetDocuments::open(f, field)?.rows(),
            None => 0,
        };
    }
    Ok(n)
}

/// A uniform number in [0, 1) from a document index (SplitMix64).
fn doc_hash(i: usize) -> f64 {
    let mut z = (i as u64)
        .wrapping_add(SPLIT_SEED)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn sha256_hex(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Streams tokens into one split's shards, with `<|endoftext|>` between documents.
struct SplitWriter {
    shards: ShardWriter,
    eot: Option<u32>,
    tokens: usize,
}

impl SplitWriter {
    /// Writes the last partial shard; returns the split's manifest entry, with a SHA-256
    /// of every shard.
    fn finish(self) -> Result<SplitEntry> {
        let shards = self
            .shards
            .finish()?
            .into_iter()
            .map(|(path, n)| {
                Ok(ShardEntry {
                    file: path
                        .file_name()
                        .expect("a file")
                        .to_string_lossy()
                        .into_owned(),
                    tokens: n,
                    sha256: sha256_hex(&path)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(SplitEntry {
            tokens: self.tokens,
            shards,
        })
    }

    fn push_document(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        if !self.shards.is_empty() {
            if let Some(eot) = self.eot {
                self.shards.push(&[eot])?;
                self.tokens += 1;
            }
        }
        self.shards.push(tokens)?;
        self.tokens += tokens.len();
        Ok(())
    }
}

fn tokenize(tok: &Tokenizer, docs: &[Document]) -> Vec<Vec<u32>> {
    // Long documents use every thread on their own; short ones are spread over threads.
    docs.par_iter()
        .with_max_len(1)
        .map(|d| {
            if d.text.len() >= LONG_DOC {
                tok.encode_parallel(&d.text, llm_bpe::Allowed::AsText)
                    .expect("ordinary encoding does not fail")
            } else {
                tok.encode_ordinary(&d.text)
            }
        })
        .collect()
}

/// Input files as a manifest records them: `(file name, size in bytes)` each, in order.
/// Comparing this with [`Manifest::inputs`] tells whether a prepared directory is current.
pub fn input_list(files: &[PathBuf]) -> Result<Vec<(String, u64)>> {
    files
        .iter()
        .map(|f| {
            let size = std::fs::metadata(f).map_err(|e| DataError::io(f, e))?.len();
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            Ok((name.into_owned(), size))
        })
        .collect()
}

/// Tokenizes `inputs` (files or directories) into shards and a manifest in `out`, on the
/// current rayon thread pool. `tokenizer_name` is recorded in the manifest.
pub fn prepare(
    inputs: &[PathBuf],
    out: &Path,
    tok: &Tokenizer,
    tokenizer_name: &str,
    config: &PrepareConfig,
    progress: Progress<'_>,
) -> Result<PrepareReport> {
    check_settings(config, out)?;
    let files = input_files(inputs)?;
    let inputs = input_list(&files)?;
    let total_bytes: u64 = inputs.iter().map(|(_, size)| size).sum();
    let n_docs = count_documents(&files, &config.text_field)?;
    let by_document = n_docs >= DOC_SPLIT_MIN_DOCS;

    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let kind = TokenType::for_vocab(tok.vocab_size());
    let mut splits = Splits::new(out, kind, tok.eot_id(), config, by_document);
    let text_bytes = tokenize_into(&mut splits, &files, tok, config, n_docs, progress)?;
    let tokens = splits.train.tokens + splits.val.tokens;
    if tokens == 0 {
        return Err(DataError::TooSmall("the corpus is empty: no tokens".into()));
    }
    let (train, val) = splits.finish()?;
    let manifest = Manifest {
        format: "llm-e2e token shards".into(),
        version: MANIFEST_VERSION,
        tokenizer: TokenizerEntry {
            name: tokenizer_name.to_string(),
            vocab_size: tok.vocab_size(),
            eot_id: tok.eot_id(),
        },
        token_type: kind,
        split_method: if by_document {
            "documents"
        } else {
            "within-documents"
        }
        .into(),
        val_fraction: config.val_fraction,
        documents: n_docs,
        inputs,
        train,
        val,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    let path = out.join("manifest.json");
    llm_common::fs::atomic_write(&path, json.as_bytes()).map_err(|e| DataError::io(&path, e))?;
    let removed = remove_unlisted_shards(out, &manifest)?;
    Ok(PrepareReport {
        manifest,
        bytes: total_bytes,
        text_bytes,
        tokens,
        removed,
    })
}

/// Refuses settings that cannot work, before anything is read or written.
fn check_settings(config: &PrepareConfig, out: &Path) -> Result<()> {
    check_fraction(config.val_fraction)?;
    if config.shard_tokens == 0 {
        return Err(DataError::Invalid("shard_tokens must be positive".into()));
    }
    if out.exists() && !out.is_dir() {
        return Err(DataError::file(
            out,
            "is a file: the output of prepare is a directory (it is created if missing)",
        ));
    }
    Ok(())
}

/// The corpus files under `inputs`; none at all is an error naming the inputs.
fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = collect_inputs(inputs)?;
    if files.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(DataError::TooSmall(format!(
            "no {FORMATS} files in {}",
            names.join(", ")
        )));
    }
    Ok(files)
}

/// The train and validation shard streams, and the rule that deals documents to them.
struct Splits {
    train: SplitWriter,
    val: SplitWriter,
    val_fraction: f64,
    by_document: bool,
    doc_index: usize,
}

impl Splits {
    fn new(
        out: &Path,
        kind: TokenType,
        eot: Option<u32>,
        config: &PrepareConfig,
        by_document: bool,
    ) -> Self {
        let writer = |split| SplitWriter {
            shards: ShardWriter::new(out, split, kind, config.shard_tokens),
            eot,
            tokens: 0,
        };
        Splits {
            train: writer("train"),
            val: writer("val"),
            val_fraction: config.val_fraction,
            by_document,
            doc_index: 0,
        }
    }

    /// A whole document to one split (by a seeded hash of its index), or its head to
    /// train and its tail to validation.
    fn push(&mut self, tokens: &[u32]) -> Result<()> {
        if self.by_document {
            let split = if doc_hash(self.doc_index) < self.val_fraction {
                &mut self.val
            } else {
                &mut self.train
            };
            split.push_document(tokens)?;
        } else {
            let cut = ((tokens.len() as f64) * (1.0 - self.val_fraction)).floor() as usize;
            self.train.push_document(&tokens[..cut])?;
            self.val.push_document(&tokens[cut..])?;
        }
        self.doc_index += 1;
        Ok(())
    }

    /// Writes the last shards and returns the manifest's entries for train and val.
    fn finish(self) -> Result<(SplitEntry, SplitEntry)> {
        Ok((self.train.finish()?, self.val.finish()?))
    }
}

/// Up to [`BATCH_BYTES`] of text: the next documents, in order (none at the end).
fn read_batch(docs: &mut impl Iterator<Item = Result<Document>>) -> Result<Vec<Document>> {
    let (mut batch, mut bytes) = (Vec::new(), 0);
    while bytes < BATCH_BYTES {
        match docs.next() {
            Some(doc) => {
                let doc = doc?;
                bytes += doc.text.len();
                batch.push(doc);
            }
            None => break,
        }
    }
    Ok(batch)
}

/// Reads the documents a batch at a time and tokenizes each batch in parallel while the
/// next one is read (so reading, a Parquet file's decompression included, is hidden behind
/// tokenizing), then deals the tokens to the splits in order, reporting progress in
/// documents. Returns the bytes of text read.
fn tokenize_into(
    splits: &mut Splits,
    files: &[PathBuf],
    tok: &Tokenizer,
    config: &PrepareConfig,
    total_docs: usize,
    progress: Progress<'_>,
) -> Result<u64> {
    let (mut done_docs, mut text_bytes) = (0usize, 0u64);
    let mut docs = documents(files, &config.text_field);
    let mut batch = read_batch(&mut docs)?;
    while !batch.is_empty() {
        let (next, tokens) = rayon::join(|| read_batch(&mut docs), || tokenize(tok, &batch));
        for tokens in tokens {
            splits.push(&tokens)?;
        }
        done_docs += batch.len();
        text_bytes += batch.iter().map(|d| d.text.len() as u64).sum::<u64>();
        progress(done_docs as u64, total_docs as u64);
        batch = next?;
    }
    Ok(text_bytes)
}

/// Deletes the shards in `out` that `manifest` does not list: left by an earlier, larger
/// preparation into the same directory. Returns their names.
fn remove_unlisted_shards(out: &Path, manifest: &Manifest) -> Result<Vec<String>> {
    let listed: Vec<&str> = manifest
        .train
        .shards
        .iter()
        .chain(&manifest.val.shards)
        .map(|s| s.file.as_str())
        .collect();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| DataError::io(out, e))? {
        let entry = entry.map_err(|e| DataError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_shard_name(&name) && !listed.contains(&name.as_str()) {
            std::fs::remove_file(entry.path()).map_err(|e| DataError::io(entry.path(), e))?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert!(is_shard_name("train_000000.bin") && is_shard_name("val_000123.bin"));
        for other in [
            "train_0.bin",
            "test_000000.bin",
            "train_000000.bin.tmp",
            "manifest.json",
        ] {
            assert!(!is_shard_name(other), "{other}");
        }
    }

    #[test]
    fn doc_hash_is_uniform_enough() {
        let n = 10_000;
        let below = (0..n).filter(|&i| doc_hash(i) < 0.1).count();
        assert!((800..1200).contains(&below), "{below}");
    }
}
