//! [`Tokenizer`]: GPT-2's byte-level BPE, loaded from OpenAI's files or a `tokenizer.json`;
//! or any other `tokenizer.json` (a Llama's SentencePiece-style BPE), run by Hugging Face's
//! `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::bytes::{bytes_to_token_str, token_str_to_bytes};
use crate::error::{BpeError, Result};
use crate::hf::{eos_from_config, HfTokenizer};
use crate::model::BpeModel;
use crate::pretokenize::{pretokenize, safe_chunks};
use crate::special::{find_specials, Allowed, SpecialToken, END_OF_TEXT};
use crate::stream::StreamDecoder;

/// OpenAI's GPT-2 vocabulary and merges, built into the crate from `assets/gpt2/`.
const GPT2_VOCAB: &str = include_str!("../../../assets/gpt2/vocab.json");
const GPT2_MERGES: &str = include_str!("../../../assets/gpt2/merges.txt");

/// A tokenizer: GPT-2's byte-level BPE with GPT-2's pre-tokenizer (OpenAI's vocabulary, or
/// any vocabulary trained the same way, see [`crate::train`]), run by llm-e2e's own code; or
/// another model's `tokenizer.json` (a Llama's), run by the `tokenizers` crate.
///
/// With a `tokenizers` model, [`Self::encode`] adds the tokenizer's own special tokens as
/// transformers' `tokenizer(text)` does (a Llama's `<s>` in front), and
/// [`Self::encode_ordinary`] adds none.
///
/// ```
/// use llm_bpe::Tokenizer;
/// let tok = Tokenizer::gpt2();
/// let ids = tok.encode("Hello, world").unwrap();
/// assert_eq!(ids, [15496, 11, 995]);
/// assert_eq!(tok.decode(&ids).unwrap(), "Hello, world");
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    engine: Engine,
    specials: Vec<SpecialToken>,
    /// The end-of-sequence token when it is not `<|endoftext|>` (a Llama's `</s>`).
    eos: Option<u32>,
    name: String,
}

/// What turns text into ids.
#[derive(Clone)]
enum Engine {
    /// GPT-2's byte-level BPE, llm-e2e's own.
    Bpe(Box<BpeModel>),
    /// Any other `tokenizer.json`, through the `tokenizers` crate.
    Hf(Box<HfTokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .finish()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| BpeError::io(path, e))
}

impl Tokenizer {
    /// OpenAI's GPT-2 tokenizer (50,257 tokens), from the copy built into the crate.
    pub fn gpt2() -> Self {
        let mut tok = Self::from_vocab_merges(
            GPT2_VOCAB,
            GPT2_MERGES,
            Path::new("assets/gpt2/vocab.json"),
            Path::new("assets/gpt2/merges.txt"),
        )
        .expect("the built-in GPT-2 vocabulary is valid (checked by tests)");
        tok.name = "gpt2".into();
        tok
    }

    /// Loads a tokenizer by name: `gpt2` for the built-in one, else a directory (see
    /// [`Self::from_dir`]) or a `tokenizer.json` file.
    pub fn load(spec: &str) -> Result<Self> {
        if spec == "gpt2" {
            return Ok(Self::gpt2());
        }
        let path = Path::new(spec);
        if path.is_dir() {
            Self::from_dir(path)
        } else if path.is_file() {
            Self::from_tokenizer_json(path)
        } else {
            Err(BpeError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such tokenizer file or directory (use `gpt2` for the built-in one)",
                ),
            ))
        }
    }

    /// Loads from a directory holding `vocab.json` + `merges.txt` (OpenAI's files, preferred),
    /// or a `tokenizer.json`: `assets/gpt2/`, a Hugging Face snapshot, or a trained tokenizer.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() || merges.is_file() {
            return Self::from_files(&vocab, &merges);
        }
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        Err(BpeError::NotFound { dir: dir.into() })
    }

    /// Loads OpenAI's `vocab.json` (a.k.a. `encoder.json`) and `merges.txt` (a.k.a. `vocab.bpe`).
    pub fn from_files(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        let mut tok = Self::from_vocab_merges(&read(vocab)?, &read(merges)?, vocab, merges)?;
        tok.name = vocab.parent().unwrap_or(vocab).display().to_string();
        Ok(tok)
    }

    fn from_vocab_merges(
        vocab_text: &str,
        merges_text: &str,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_text).map_err(|e| {
            BpeError::corrupt(vocab_path, format!("not a JSON map of token → id: {e}"))
        })?;
        let merges = parse_merges_txt(merges_text, merges_path)?;
        Self::build(vocab, &merges, &[], vocab_path, merges_path)
    }

    /// Loads a Hugging Face `tokenizer.json` holding a byte-level BPE model.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let corrupt = |m: String| BpeError::corrupt(path, m);
        let root: Value = serde_json::from_str(&read(path)?)
            .map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        let model = &root["model"];
        if model["type"] != "BPE" || !json_mentions_byte_level(&root["pre_tokenizer"]) {
            return Self::from_hf_tokenizer_json(path);
        }
        let vocab: HashMap<String, u32> = serde_json::from_value(model["vocab"].clone())
            .map_err(|e| corrupt(format!("model.vocab is not a map of token → id: {e}")))?;
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| corrupt("model.merges is missing or not a list".into()))?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                parse_json_merge(m).ok_or_else(|| {
                    corrupt(format!("model.merges[{i}] is not a pair of tokens: {m}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut added = Vec::new();
        for (i, t) in root["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let content = t["content"].as_str();
            let id = t["id"].as_u64();
            match (content, id) {
                (Some(c), Some(id)) if t["special"].as_bool().unwrap_or(false) => {
                    added.push((c.to_string(), id as u32))
                }
                (Some(_), Some(_)) => {}
                _ => return Err(corrupt(format!("added_tokens[{i}] lacks content or id"))),
            }
        }
        let mut tok = Self::build(vocab, &merges, &added, path, path)?;
        tok.name = path.display().to_string();
        Ok(tok)
    }

    /// A tokenizer.json that is not GPT-2-style byte-level BPE, run by the `tokenizers` crate.
    fn from_hf_tokenizer_json(path: &Path) -> Result<Self> {
        let (hf, specials) = HfTokenizer::from_file(path)?;
        let eos = eos_from_config(path)
            .or_else(|| Some("</s>".to_string()))
            .and_then(|text| specials.iter().find(|s| s.text == text).map(|s| s.id));
        Ok(Tokenizer {
            engine: Engine::Hf(Box::new(hf)),
            specials,
            eos,
            name: path.display().to_string(),
        })
    }

    /// Builds the tokenizer from a vocabulary, merges given as token strings, and the
    /// special tokens listed outside the vocabulary (`added_tokens`).
    fn build(
        mut vocab: HashMap<String, u32>,
        merges: &[(String, String)],
        added: &[(String, u32)],
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        for (text, id) in added {
            vocab.insert(text.clone(), *id);
        }
        let n = vocab.len();
        let mut by_id: Vec<Option<&str>> = vec![None; n];
        for (s, &id) in &vocab {
            let slot = by_id.get_mut(id as usize).ok_or_else(|| {
                BpeError::corrupt(
                    vocab_path,
                    format!("id {id} of {s:?} is out of range: ids must be 0..{n}"),
                )
            })?;
            if let Some(other) = slot.replace(s) {
                return Err(BpeError::corrupt(
                    vocab_path,
                    format!("id {id} is used by both {other:?} and {s:?}"),
                ));
            }
        }
        let by_id: Vec<&str> = by_id
            .into_iter()
            .map(|s| s.expect("n distinct ids in 0..n"))
            .collect();
        let mut merge_ids = Vec::with_capacity(merges.len());
        let mut produced = vec![false; n];
        for (i, (a, b)) in merges.iter().enumerate() {
            let lookup = |t: &str| {
                vocab.get(t).copied().ok_or_else(|| {
                    BpeError::corrupt(
                        merges_path,
                        format!("merge {} uses {t:?}, which is not in the vocabulary", i + 1),
                    )
                })
            };
            let (l, r) = (lookup(a)?, lookup(b)?);
            let product = vocab.get(&format!("{a}{b}")).ok_or_else(|| {
                BpeError::corrupt(
                    merges_path,
                    format!(
                        "merge {} makes {a}{b:?}, which is not in the vocabulary",
                        i + 1
                    ),
                )
            })?;
            produced[*product as usize] = true;
            merge_ids.push((l, r));
        }
        // A token is special if it is listed as such, or if it is neither a single byte nor
        // the product of a merge (GPT-2's vocab.json lists `<|endoftext|>` like any token).
        let mut decoder = Vec::with_capacity(n);
        let mut specials = Vec::new();
        for (id, s) in by_id.iter().enumerate() {
            let bytes = token_str_to_bytes(s);
            let listed = added.iter().any(|(t, i)| *i as usize == id && t == s);
            let single_byte = matches!(&bytes, Some(b) if b.len() == 1);
            if listed || !(single_byte || produced[id]) {
                specials.push(SpecialToken {
                    text: s.to_string(),
                    id: id as u32,
                });
                decoder.push(s.as_bytes().to_vec());
            } else {
                let bytes = bytes.ok_or_else(|| {
                    BpeError::corrupt(
                        vocab_path,
                        format!("token {s:?} (id {id}) has a character outside GPT-2's byte table"),
                    )
                })?;
                decoder.push(bytes);
            }
        }
        let special_ids: Vec<u32> = specials.iter().map(|s| s.id).collect();
        let model = BpeModel::new(decoder, &special_ids, merge_ids)
            .map_err(|m| BpeError::corrupt(vocab_path, m))?;
        Ok(Tokenizer {
            engine: Engine::Bpe(Box::new(model)),
            specials,
            eos: None,
            name: String::new(),
        })
    }

    /// Builds a tokenizer from learned tokens (`decoder[id]` = bytes, the 256 single bytes
    /// among them), merges as id pairs in rank order, and special tokens given the next ids.
    pub(crate) fn from_parts(
        mut decoder: Vec<Vec<u8>>,
        merges: Vec<(u32, u32)>,
        specials: &[String],
    ) -> Result<Self> {
        let mut special_tokens = Vec::new();
        for text in specials {
            special_tokens.push(SpecialToken {
                text: text.clone(),
                id: decoder.len() as u32,
            });
            decoder.push(text.as_bytes().to_vec());
        }
        let ids: Vec<u32> = special_tokens.iter().map(|s| s.id).collect();
        let model = BpeModel::new(decoder, &ids, merges).map_err(BpeError::Train)?;
        Ok(Tokenizer {
            engine: Engine::Bpe(Box::new(model)),
            specials: special_tokens,
            eos: None,
            name: "trained".into(),
        })
    }

    /// Where this tokenizer came from: `gpt2`, or a path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of token ids, special tokens included (50,257 for GPT-2).
    pub fn vocab_size(&self) -> usize {
        match &self.engine {
            Engine::Bpe(model) => model.vocab_size(),
            Engine::Hf(hf) => hf.vocab_size(),
        }
    }

    /// Whether this is a `tokenizer.json` run by the `tokenizers` crate rather than GPT-2's
    /// byte-level BPE.
    pub fn is_hf(&self) -> bool {
        matches!(self.engine, Engine::Hf(_))
    }

    /// The special tokens.
    pub fn special_tokens(&self) -> &[SpecialToken] {
        &self.specials
    }

    /// The id of a special token, by its text.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials.iter().find(|s| s.text == text).map(|s| s.id)
    }

    /// The id of `<|endoftext|>` (50256 for GPT-2), or else the end-of-sequence token of a
    /// `tokenizers` model (`tokenizer_config.json`'s `eos_token`, or `</s>`), if there is one.
    pub fn eot_id(&self) -> Option<u32> {
        self.special_id(END_OF_TEXT).or(self.eos)
    }

    /// The bytes of one token.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let bytes = match &self.engine {
            Engine::Bpe(model) => model.token_bytes(id),
            Engine::Hf(hf) => hf.token_bytes(id),
        };
        bytes.ok_or(BpeError::IdOutOfRange {
            id,
            vocab_size: self.vocab_size(),
        })
    }

    /// The id of the ordinary token with exactly these bytes.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        match &self.engine {
            Engine::Bpe(model) => model.token_id(bytes),
            Engine::Hf(hf) => hf.token_id(bytes),
        }
    }

    /// Encodes text. Special-token text (e.g. `<|endoftext|>`) is an error: see
    /// [`Self::encode_with`] to allow it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, Allowed::None)
    }

    /// Encodes text, with a policy for special-token text.
    pub fn encode_with(&self, text: &str, allowed: Allowed<'_>) -> Result<Vec<u32>> {
        let found = find_specials(&self.specials, text, allowed)?;
        if let Engine::Hf(hf) = &self.engine {
            return Ok(hf.encode(text, true)); // every special token found is allowed
        }
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut pos = 0;
        for f in found {
            self.encode_ordinary_into(&text[pos..f.start], &mut out);
            out.push(f.id);
            pos = f.end;
        }
        self.encode_ordinary_into(&text[pos..], &mut out);
        Ok(out)
    }

    /// Encodes text with no special tokens: special-token text is ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// [`Self::encode_ordinary`], appending to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        match &self.engine {
            Engine::Bpe(model) => {
                for piece in pretokenize(text) {
                    model.encode_piece(piece.as_bytes(), out);
                }
            }
            Engine::Hf(hf) => out.extend(hf.encode(text, false)),
        }
    }

    /// Encodes many texts in parallel (rayon), each with the same policy.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: Allowed<'_>,
    ) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .map(|t| self.encode_with(t.as_ref(), allowed))
            .collect()
    }

    /// Encodes one long text on all rayon threads. The text is cut only where GPT-2's
    /// pre-tokenizer always splits, so the ids equal those of [`Self::encode_with`].
    pub fn encode_parallel(&self, text: &str, allowed: Allowed<'_>) -> Result<Vec<u32>> {
        if self.is_hf() {
            return self.encode_with(text, allowed);
        }
        let found = find_specials(&self.specials, text, allowed)?;
        let mut chunks: Vec<(&str, Option<u32>)> = Vec::new();
        let mut pos = 0;
        for f in &found {
            chunks.extend(
                safe_chunks(&text[pos..f.start])
                    .into_iter()
                    .map(|c| (c, None)),
            );
            chunks.push(("", Some(f.id)));
            pos = f.end;
        }
        chunks.extend(safe_chunks(&text[pos..]).into_iter().map(|c| (c, None)));
        let parts: Vec<Vec<u32>> = chunks
            .par_iter()
            .map(|&(chunk, special)| match special {
                Some(id) => vec![id],
                None => self.encode_ordinary(chunk),
            })
            .collect();
        Ok(parts.concat())
    }

    /// Decodes ids to text. Byte sequences that are not valid UTF-8 (a multi-byte character
    /// cut between tokens) become U+FFFD, as in tiktoken's `decode`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?; // checks the ids
        if let Engine::Hf(hf) = &self.engine {
            if let Some(text) = hf.decode(ids) {
                return Ok(text);
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Decodes ids to raw bytes.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// A decoder for token-by-token output: it yields text only once characters are whole.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Writes this tokenizer as a Hugging Face `tokenizer.json` (loadable by `tokenizers`
    /// and by [`Self::from_tokenizer_json`]). The file is written atomically.
    pub fn save_tokenizer_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let model = match &self.engine {
            Engine::Bpe(model) => model,
            Engine::Hf(hf) => {
                let text = hf.to_json()?;
                return llm_common::fs::atomic_write(path, text.as_bytes())
                    .map_err(|e| BpeError::io(path, e));
            }
        };
        let special_ids: Vec<u32> = self.specials.iter().map(|s| s.id).collect();
        let mut vocab = serde_json::Map::new();
        for id in 0..self.vocab_size() as u32 {
            let bytes = model.token_bytes(id).expect("id below vocab_size");
            let key = if special_ids.contains(&id) {
                String::from_utf8_lossy(bytes).into_owned()
            } else {
                bytes_to_token_str(bytes)
            };
            vocab.insert(key, json!(id));
        }
        let merges: Vec<String> = model
            .merge_list()
            .iter()
            .map(|&(l, r)| {
                let s =
                    |id| bytes_to_token_str(model.token_bytes(id).expect("merge ids are valid"));
                format!("{} {}", s(l), s(r))
            })
            .collect();
        let added: Vec<Value> = self
            .specials
            .iter()
            .map(|s| {
                json!({"id": s.id, "content": s.text, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": true, "special": true})
            })
            .collect();
        let byte_level = |prefix: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": trim, "use_regex": true});
        let root = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level(false, true),
            "post_processor": byte_level(true, false),
            "decoder": byte_level(true, true),
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        });
        let text = serde_json::to_string(&root).expect("JSON values serialise");
        llm_common::fs::atomic_write(path, text.as_bytes()).map_err(|e| BpeError::io(path, e))
    }

    /// How many tokens the merge rules cannot rebuild from their own bytes (0 for GPT-2).
    #[doc(hidden)]
    pub fn non_canonical_tokens(&self) -> usize {
        match &self.engine {
            Engine::Bpe(model) => model.non_canonical_count(),
            Engine::Hf(_) => 0,
        }
    }
}

/// A merge as `tokenizer.json` writes it: `"a b"` (legacy) or `["a", "b"]`.
fn parse_json_merge(m: &Value) -> Option<(String, String)> {
    match m {
        Value::String(s) => s
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string())),
        Value::Array(pair) if pair.len() == 2 => {
            Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string()))
        }
        _ => None,
    }
}

/// Whether a `pre_tokenizer` JSON value is, or contains, a ByteLevel step.
fn json_mentions_byte_level(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            o.get("type").is_some_and(|t| t == "ByteLevel")
                || o.values().any(json_mentions_byte_level)
        }
        Value::Array(a) => a.iter().any(json_mentions_byte_level),
        _ => false,
    }
}

/// Parses `merges.txt`: an optional `#version` line, then one `left right` pair per line.
fn parse_merges_txt(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let (a, b) = line.split_once(' ').ok_or_else(|| {
            BpeError::corrupt(
                path,
                format!("line {}: expected `left right`, got {line:?}", i + 1),
            )
        })?;
        if b.contains(' ') {
            return Err(BpeError::corrupt(
                path,
                format!("line {}: expected two tokens, got {line:?}", i + 1),
            ));
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}
