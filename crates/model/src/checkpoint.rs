//! llm-e2e's own checkpoint format: one file, full precision, checksummed, written atomically.
//!
//! ```text
//! b"LLME2ECK"  u32 version = 2 (LE)  u64 header length (LE)  [u8; 32] SHA-256 of the header
//! header JSON  section bytes …
//! header: {"config": {…}, "metadata": {…},
//!          "sections": [{"name", "offset", "len", "sha256"}, …]}
//! ```
//!
//! The `model` section is the model's Burn record (named MessagePack, f32), which keeps
//! parameter ids so that an optimizer's state can be matched to it on resume; the training
//! crate adds more sections (optimizer, run state). Writing goes to a temporary file that
//! is renamed over the old one, so a crash never leaves a half-written checkpoint, and a
//! model with NaN or infinite weights is refused.
//!
//! Loading checks the magic number, the version, the header's SHA-256, that the sections
//! fill the file exactly, and every section's SHA-256 (the sections in parallel). A mismatch
//! is a [`ModelError::Corrupt`] that names the file and the section. Version 1 files
//! (written before checksums) still load, unchecked.

use std::io::Read;
use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::model::Gpt;

const MAGIC: &[u8; 8] = b"LLME2ECK";
const VERSION: u32 = 2;
/// Magic, version and header length: the prefix of every version.
const PREFIX_V1: usize = 8 + 4 + 8;
/// Version 2 adds the header's SHA-256.
const PREFIX_V2: usize = PREFIX_V1 + 32;

#[derive(Serialize, Deserialize)]
struct SectionEntry {
    name: String,
    offset: u64,
    len: u64,
    /// Hex SHA-256 of the section's bytes (absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    config: Gpt2Config,
    #[serde(default)]
    metadata: serde_json::Value,
    sections: Vec<SectionEntry>,
}

/// A checkpoint in memory: the model config, free-form metadata (e.g. the tokenizer, the
/// step), and named binary sections.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: Gpt2Config,
    pub metadata: serde_json::Value,
    sections: Vec<(String, Vec<u8>)>,
}

/// What a checkpoint's header says, read without its sections ([`Checkpoint::inspect`]).
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    pub config: Gpt2Config,
    pub metadata: serde_json::Value,
    pub version: u32,
    /// Size of the file in bytes.
    pub len: u64,
}

impl CheckpointInfo {
    /// The training step recorded in the metadata (`"step"`), if any.
    pub fn step(&self) -> Option<usize> {
        step_of(&self.metadata)
    }
}

fn step_of(metadata: &serde_json::Value) -> Option<usize> {
    metadata.get("step")?.as_u64().map(|s| s as usize)
}

type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn corrupt(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Corrupt {
        path: path.into(),
        what: what.into(),
    }
}

/// The fixed-size start of a file: its version, header length and header checksum.
struct Prefix {
    version: u32,
    header_len: usize,
    header_sha256: Option<[u8; 32]>,
    len: usize,
}

impl Prefix {
    /// Parses the start of `bytes` (at least [`PREFIX_V2`] bytes of the file, or all of it).
    fn parse(path: &Path, bytes: &[u8]) -> Result<Prefix> {
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(corrupt(
                path,
                "bad magic number (this is not, or no longer, an llm-e2e checkpoint)",
            ));
        }
        if bytes.len() < PREFIX_V1 {
            return Err(corrupt(
                path,
                format!("truncated: the file has only {} bytes", bytes.len()),
            ));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let header_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        match version {
            1 => Ok(Prefix {
                version,
                header_len,
                header_sha256: None,
                len: PREFIX_V1,
            }),
            2 => {
                let hash = bytes
                    .get(PREFIX_V1..PREFIX_V2)
                    .ok_or_else(|| corrupt(path, "truncated inside the header checksum"))?;
                Ok(Prefix {
                    version,
                    header_len,
                    header_sha256: Some(hash.try_into().expect("32 bytes")),
                    len: PREFIX_V2,
                })
            }
            v => Err(ModelError::file(
                path,
                format!("checkpoint format version {v} is not supported (this build reads versions 1 and {VERSION})"),
            )),
        }
    }

    /// Checks and parses the header JSON that follows the prefix.
    fn header(&self, path: &Path, header: &[u8]) -> Result<Header> {
        if header.len() < self.header_len {
            return Err(corrupt(path, "truncated inside the header"));
        }
        if let Some(want) = self.header_sha256 {
            if sha256(header) != want {
                return Err(corrupt(path, "the header's SHA-256 does not match"));
            }
        }
        let header: Header = serde_json::from_slice(header)
            .map_err(|e| corrupt(path, format!("the header is not valid: {e}")))?;
        header
            .config
            .validate()
            .map_err(|e| corrupt(path, format!("the header's model config: {e}")))?;
        Ok(header)
    }

    /// Checks that the sections lie inside a file of `file_len` bytes and, from version 2 on,
    /// fill it exactly.
    fn check_bounds(&self, path: &Path, header: &Header, file_len: u64) -> Result<()> {
        let body = (self.len + self.header_len) as u64;
        let mut end = body;
        for s in &header.sections {
            let s_end = body
                .checked_add(s.offset)
                .and_then(|e| e.checked_add(s.len))
                .unwrap_or(u64::MAX);
            if s_end > file_len {
                return Err(corrupt(
                    path,
                    format!(
                        "truncated: section {:?} ends at byte {s_end} but the file has {file_len} bytes",
                        s.name
                    ),
                ));
            }
            end = end.max(s_end);
        }
        if self.version >= 2 && end != file_len {
            return Err(corrupt(
                path,
                format!("{} unexpected bytes after the last section", file_len - end),
            ));
        }
        Ok(())
    }
}

impl Checkpoint {
    /// An empty checkpoint of a model shaped `config`.
    pub fn new(config: Gpt2Config) -> Self {
        Checkpoint {
            config,
            metadata: serde_json::json!({}),
            sections: Vec::new(),
        }
    }

    /// A checkpoint of `model` (its weights go in the `model` section). Weights holding NaN
    /// or infinity are refused: a checkpoint is only ever made of a usable model.
    pub fn from_model<B: Backend>(model: &Gpt<B>) -> Result<Self> {
        model.check_finite()?;
        let bytes = ModelRecorder::default()
            .record(model.clone().into_record(), ())
            .map_err(|e| ModelError::Input(format!("cannot serialise the model: {e}")))?;
        Ok(Checkpoint {
            config: model.config().clone(),
            metadata: serde_json::json!({}),
            sections: vec![("model".into(), bytes)],
        })
    }

    /// Adds or replaces a section.
    pub fn set_section(&mut self, name: &str, bytes: Vec<u8>) {
        self.sections.retain(|(n, _)| n != name);
        self.sections.push((name.to_string(), bytes));
    }

    /// A section's bytes.
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// The training step recorded in the metadata (`"step"`), if any.
    pub fn step(&self) -> Option<usize> {
        step_of(&self.metadata)
    }

    /// Rebuilds the model on `device`.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<Gpt<B>> {
        self.load_into(self.config.init_for_load::<B>(device)?, device)
    }

    /// Loads the `model` section into `model`, a GPT of this checkpoint's shape (carrying
    /// the same LoRA adapters, if the checkpoint has them).
    pub fn load_into<B: Backend>(&self, model: Gpt<B>, device: &B::Device) -> Result<Gpt<B>> {
        let bytes = self.section("model").ok_or_else(|| match self.lora_base() {
            Some((base, _)) => ModelError::Input(format!(
                "a LoRA checkpoint holds only adapters: load it on its base {} (`pretrained::load` does)",
                base.model
            )),
            None => ModelError::Input("the checkpoint has no model section".into()),
        })?;
        let record = ModelRecorder::default()
            .load(bytes.to_vec(), device)
            .map_err(|e| {
                ModelError::Input(format!("the model section does not match the config: {e}"))
            })?;
        Ok(model.load_record(record))
    }

    /// Writes the checkpoint to `path` atomically, with a SHA-256 of every section.
    pub fn save(&self, path: &Path) -> Result<()> {
        let hashes: Vec<String> = self
            .sections
            .par_iter()
            .map(|(_, b)| sha256_hex(b))
            .collect();
        let mut offset = 0u64;
        let sections = self
            .sections
            .iter()
            .zip(&hashes)
            .map(|((name, bytes), hash)| {
                let entry = SectionEntry {
                    name: name.clone(),
                    offset,
                    len: bytes.len() as u64,
                    sha256: Some(hash.clone()),
                };
                offset += bytes.len() as u64;
                entry
            })
            .collect();
        let header = serde_json::to_vec(&Header {
            config: self.config.clone(),
            metadata: self.metadata.clone(),
            sections,
        })
        .expect("header serialises");
        let mut out = Vec::with_capacity(PREFIX_V2 + header.len() + offset as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&sha256(&header));
        out.extend_from_slice(&header);
        for (_, bytes) in &self.sections {
            out.extend_from_slice(bytes);
        }
        crate::write_atomic(path, &out)
    }

    /// Whether `path` is a file that starts like a checkpoint.
    pub fn is_checkpoint(path: &Path) -> bool {
        let mut magic = [0u8; 8];
        path.is_file()
            && std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
            && &magic == MAGIC
    }

    /// Reads only the header: the config and metadata, and checks that the file is complete
    /// (its sections fill it exactly). Fast: the sections are neither read nor verified.
    pub fn inspect(path: &Path) -> Result<CheckpointInfo> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let mut start = Vec::with_capacity(PREFIX_V2);
        (&mut file)
            .take(PREFIX_V2 as u64)
            .read_to_end(&mut start)
            .map_err(|e| ModelError::io(path, e))?;
        let prefix = Prefix::parse(path, &start)?;
        if prefix.len.saturating_add(prefix.header_len) as u64 > len {
            return Err(corrupt(path, "truncated inside the header"));
        }
        let mut header = start[prefix.len..].to_vec();
        (&mut file)
            .take((prefix.header_len - header.len().min(prefix.header_len)) as u64)
            .read_to_end(&mut header)
            .map_err(|e| ModelError::io(path, e))?;
        header.truncate(prefix.header_len);
        let parsed = prefix.header(path, &header)?;
        prefix.check_bounds(path, &parsed, len)?;
        Ok(CheckpointInfo {
            config: parsed.config,
            metadata: parsed.metadata,
            version: prefix.version,
            len,
        })
    }

    /// Reads a checkpoint, checking its magic, version, header checksum, section bounds and
    /// section checksums.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let prefix = Prefix::parse(path, &bytes)?;
        let body = prefix
            .len
            .saturating_add(prefix.header_len)
            .min(bytes.len());
        let header = prefix.header(path, &bytes[prefix.len..body])?;
        prefix.check_bounds(path, &header, bytes.len() as u64)?;
        let range = |s: &SectionEntry| {
            let start = body + s.offset as usize;
            start..start + s.len as usize
        };
        let mismatch = header.sections.par_iter().find_first(|s| {
            s.sha256
                .as_ref()
                .is_some_and(|want| *want != sha256_hex(&bytes[range(s)]))
        });
        if let Some(s) = mismatch {
            return Err(corrupt(
                path,
                format!(
                    "section {:?} ({} bytes at offset {}) does not match its SHA-256",
                    s.name,
                    s.len,
                    body as u64 + s.offset
                ),
            ));
        }
        let sections = header
            .sections
            .iter()
            .map(|s| (s.name.clone(), bytes[range(s)].to_vec()))
            .collect();
        Ok(Checkpoint {
            config: header.config,
            metadata: header.metadata,
            sections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn saved(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let config = Gpt2Config::tiny();
        let model = config.init::<Flex>(&Default::default()).unwrap();
        let mut ckpt = Checkpoint::from_model(&model).unwrap();
        ckpt.metadata = serde_json::json!({"step": 7});
        ckpt.set_section("extra", vec![1, 2, 3]);
        let path = dir.join("a.ckpt");
        ckpt.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    #[test]
    fn round_trip_and_inspect() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = saved(dir.path());
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.section("extra"), Some(&[1u8, 2, 3][..]));
        assert_eq!(back.step(), Some(7));
        let info = Checkpoint::inspect(&path).unwrap();
        assert_eq!(
            (info.version, info.len, info.step()),
            (2, bytes.len() as u64, Some(7))
        );
    }

    #[test]
    fn a_flipped_byte_names_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes) = saved(dir.path());
        let at = bytes.len() / 4;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("a.ckpt") && msg.contains("section \"model\""),
            "{msg}"
        );
        // The header alone is intact, so a quick look does not see it.
        Checkpoint::inspect(&path).unwrap();
    }

    #[test]
    fn a_damaged_header_or_a_truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = saved(dir.path());
        let mut header = bytes.clone();
        header[PREFIX_V2 + 3] ^= 1;
        std::fs::write(&path, &header).unwrap();
        let msg = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(msg.contains("header's SHA-256"), "{msg}");
        for cut in [bytes.len() - 1, bytes.len() / 2, PREFIX_V2 + 5, 10, 3] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            for err in [
                Checkpoint::load(&path).unwrap_err(),
                Checkpoint::inspect(&path).unwrap_err(),
            ] {
                assert!(
                    matches!(err, ModelError::Corrupt { .. }),
                    "cut at {cut}: {err}"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .to_string()
            .contains("1 unexpected bytes"));
    }

    #[test]
    fn non_finite_weights_are_never_saved() {
        let config = Gpt2Config::tiny();
        let model = config.init::<Flex>(&Default::default()).unwrap();
        let mut model = model;
        model.ln_f.gamma = model.ln_f.gamma.map(|g| g.mul_scalar(f32::NAN));
        let err = Checkpoint::from_model(&model).unwrap_err();
        assert!(err.to_string().contains("ln_f.gamma"), "{err}");
    }
}
