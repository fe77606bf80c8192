//! llm-e2e's own checkpoint format: one file, full precision, written atomically.
//!
//! ```text
//! b"LLME2ECK"  u32 version (LE)  u64 header length (LE)  header JSON  section bytes …
//! header: {"config": {…}, "metadata": {…}, "sections": [{"name", "offset", "len"}, …]}
//! ```
//!
//! The `model` section is the model's Burn record (named MessagePack, f32), which keeps
//! parameter ids so that an optimizer's state can be matched to it on resume; the training
//! crate adds more sections (optimizer, run state). Writing goes to a temporary file that
//! is renamed over the old one, so a crash never leaves a half-written checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::model::Gpt;

const MAGIC: &[u8; 8] = b"LLME2ECK";
const VERSION: u32 = 1;
const PREFIX: usize = 8 + 4 + 8;

#[derive(Serialize, Deserialize)]
struct SectionEntry {
    name: String,
    offset: u64,
    len: u64,
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

type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl Checkpoint {
    /// A checkpoint of `model` (its weights go in the `model` section).
    pub fn from_model<B: Backend>(model: &Gpt<B>, config: &Gpt2Config) -> Result<Self> {
        let bytes = ModelRecorder::default()
            .record(model.clone().into_record(), ())
            .map_err(|e| ModelError::Input(format!("cannot serialise the model: {e}")))?;
        Ok(Checkpoint {
            config: config.clone(),
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

    /// Rebuilds the model on `device`.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<Gpt<B>> {
        let bytes = self
            .section("model")
            .ok_or_else(|| ModelError::Input("the checkpoint has no model section".into()))?;
        let record = ModelRecorder::default()
            .load(bytes.to_vec(), device)
            .map_err(|e| {
                ModelError::Input(format!("the model section does not match the config: {e}"))
            })?;
        Ok(self.config.init::<B>(device)?.load_record(record))
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut offset = 0u64;
        let sections = self
            .sections
            .iter()
            .map(|(name, bytes)| {
                let entry = SectionEntry {
                    name: name.clone(),
                    offset,
                    len: bytes.len() as u64,
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
        let mut out = Vec::with_capacity(PREFIX + header.len() + offset as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, bytes) in &self.sections {
            out.extend_from_slice(bytes);
        }
        crate::write_atomic(path, &out)
    }

    /// Whether `path` is a file that starts like a checkpoint.
    pub fn is_checkpoint(path: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 8];
        path.is_file()
            && std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
            && &magic == MAGIC
    }

    /// Reads a checkpoint, checking its magic, version and section bounds.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |m: &str| ModelError::file(path, m.to_string());
        if bytes.len() < PREFIX || &bytes[..8] != MAGIC {
            return Err(bad("not an llm-e2e checkpoint (bad magic number)"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(ModelError::file(
                path,
                format!("checkpoint format version {version} is not supported (this build reads version {VERSION})"),
            ));
        }
        let header_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let body = PREFIX
            .checked_add(header_len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| bad("truncated checkpoint (header)"))?;
        let header: Header = serde_json::from_slice(&bytes[PREFIX..body])
            .map_err(|e| ModelError::file(path, format!("corrupt checkpoint header: {e}")))?;
        header.config.validate()?;
        let mut sections = Vec::new();
        for s in header.sections {
            let start = body as u64 + s.offset;
            let end = start + s.len;
            if end > bytes.len() as u64 {
                return Err(ModelError::file(
                    path,
                    format!("truncated checkpoint (section {:?})", s.name),
                ));
            }
            sections.push((s.name, bytes[start as usize..end as usize].to_vec()));
        }
        Ok(Checkpoint {
            config: header.config,
            metadata: header.metadata,
            sections,
        })
    }
}
