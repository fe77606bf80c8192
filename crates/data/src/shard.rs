//! Pre-tokenized shard files, in llm.c's format so that its data preppers and ours
//! interoperate.
//!
//! ```text
//! header: 256 little-endian i32 (1,024 bytes)
//!   [0] magic    20240520 (u16 tokens) | 20240801 (u32 tokens)
//!   [1] version  1        (u16 tokens) | 7        (u32 tokens)
//!   [2] number of tokens
//!   [3] bytes per token (2 or 4; llm.c leaves it 0, and it is implied by the magic)
//! body:   the tokens, little-endian u16 or u32
//! ```
//!
//! Tokens are u16 when the vocabulary fits (GPT-2's 50,257 does), u32 otherwise.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{DataError, Result};

/// Size of the header in bytes.
pub const HEADER_BYTES: usize = 256 * 4;
const MAGIC_U16: i32 = 20240520;
const VERSION_U16: i32 = 1;
const MAGIC_U32: i32 = 20240801;
const VERSION_U32: i32 = 7;

/// The width of a shard's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    U16,
    U32,
}

impl TokenType {
    /// The narrowest type that holds every id of a vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenType::U16
        } else {
            TokenType::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenType::U16 => 2,
            TokenType::U32 => 4,
        }
    }
}

/// Encodes a whole shard (header + tokens) in memory.
pub fn encode_shard(tokens: &[u32], kind: TokenType) -> Vec<u8> {
    let mut header = [0i32; 256];
    let (magic, version) = match kind {
        TokenType::U16 => (MAGIC_U16, VERSION_U16),
        TokenType::U32 => (MAGIC_U32, VERSION_U32),
    };
    header[0] = magic;
    header[1] = version;
    header[2] = i32::try_from(tokens.len()).expect("shards hold fewer than 2^31 tokens");
    header[3] = kind.bytes() as i32;
    let mut out = Vec::with_capacity(HEADER_BYTES + tokens.len() * kind.bytes());
    for h in header {
        out.extend_from_slice(&h.to_le_bytes());
    }
    match kind {
        TokenType::U16 => {
            for &t in tokens {
                out.extend_from_slice(&(t as u16).to_le_bytes());
            }
        }
        TokenType::U32 => {
            for &t in tokens {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
    }
    out
}

/// The file name of a split's `index`-th shard: `train_000000.bin`.
pub fn shard_file_name(split: &str, index: usize) -> String {
    format!("{split}_{index:06}.bin")
}

/// Whether `name` is a shard's file name of the `train` or `val` split.
pub fn is_shard_name(name: &str) -> bool {
    let Some((split, index)) = name
        .strip_suffix(".bin")
        .and_then(|stem| stem.split_once('_'))
    else {
        return false;
    };
    matches!(split, "train" | "val")
        && index
            .parse::<usize>()
            .is_ok_and(|i| shard_file_name(split, i) == name)
}

/// Writes a shard atomically (temporary file, then rename).
pub fn write_shard(path: &Path, tokens: &[u32], kind: TokenType) -> Result<()> {
    llm_common::fs::atomic_write(path, &encode_shard(tokens, kind))
        .map_err(|e| DataError::io(path, e))
}

/// An open, memory-mapped shard whose header and size have been checked.
pub struct Shard {
    path: PathBuf,
    mmap: Mmap,
    kind: TokenType,
    len: usize,
}

impl Shard {
    /// Maps a shard and checks its magic number, version and length.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        // SAFETY: read-only map of a file we do not modify; shards are written by rename, so
        // a reader never sees one being written.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        if mmap.len() < HEADER_BYTES {
            return Err(DataError::file(
                path,
                format!(
                    "truncated shard: {} bytes, shorter than the {HEADER_BYTES}-byte header",
                    mmap.len()
                ),
            ));
        }
        let word =
            |i: usize| i32::from_le_bytes(mmap[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let kind = match (word(0), word(1)) {
            (MAGIC_U16, VERSION_U16) => TokenType::U16,
            (MAGIC_U32, VERSION_U32) => TokenType::U32,
            (MAGIC_U16 | MAGIC_U32, v) => {
                return Err(DataError::file(
                    path,
                    format!("unsupported shard format version {v}"),
                ))
            }
            (m, _) => {
                return Err(DataError::file(
                    path,
                    format!(
                    "not a token shard: bad magic number {m} (expected {MAGIC_U16} or {MAGIC_U32})"
                ),
                ))
            }
        };
        let len = usize::try_from(word(2))
            .map_err(|_| DataError::file(path, format!("negative token count {}", word(2))))?;
        let expected = HEADER_BYTES + len * kind.bytes();
        if mmap.len() != expected {
            return Err(DataError::file(
                path,
                format!(
                    "{} shard: the header promises {len} tokens ({expected} bytes) but the file has {} bytes",
                    if mmap.len() < expected { "truncated" } else { "oversized" },
                    mmap.len()
                ),
            ));
        }
        Ok(Shard {
            path: path.into(),
            mmap,
            kind,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn token_type(&self) -> TokenType {
        self.kind
    }

    /// Mapped bytes (header included).
    pub fn mapped_bytes(&self) -> usize {
        self.mmap.len()
    }

    /// Appends `tokens[start .. start + n]` to `out`, checking every id against `vocab_size`.
    pub fn read_into(
        &self,
        start: usize,
        n: usize,
        vocab_size: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if start + n > self.len {
            return Err(DataError::Invalid(format!(
                "{}: tokens {start}..{} are past the end ({} tokens)",
                self.path.display(),
                start + n,
                self.len
            )));
        }
        let w = self.kind.bytes();
        let body = &self.mmap[HEADER_BYTES + start * w..HEADER_BYTES + (start + n) * w];
        let first = out.len();
        match self.kind {
            TokenType::U16 => out.extend(
                body.chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            ),
            TokenType::U32 => out.extend(
                body.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        if let Some(i) = out[first..].iter().position(|&t| t as usize >= vocab_size) {
            return Err(DataError::TokenOutOfRange {
                path: self.path.clone(),
                id: out[first + i],
                position: (start + i) as u64,
                vocab_size,
            });
        }
        Ok(())
    }

    /// Every token (for small shards and tools).
    pub fn to_vec(&self, vocab_size: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(self.len);
        self.read_into(0, self.len, vocab_size, &mut out)?;
        Ok(out)
    }
}

/// Accumulates tokens and writes numbered shards of at most `shard_tokens` tokens:
/// `<prefix>_000000.bin`, `<prefix>_000001.bin`, …
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    kind: TokenType,
    shard_tokens: usize,
    buf: Vec<u32>,
    written: Vec<(PathBuf, usize)>,
}

impl ShardWriter {
    pub fn new(dir: &Path, prefix: &str, kind: TokenType, shard_tokens: usize) -> Self {
        ShardWriter {
            dir: dir.into(),
            prefix: prefix.into(),
            kind,
            shard_tokens: shard_tokens.max(1),
            buf: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Whether no token has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.written.is_empty()
    }

    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        let mut rest = tokens;
        while !rest.is_empty() {
            let room = self.shard_tokens - self.buf.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            rest = later;
            if self.buf.len() == self.shard_tokens {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(shard_file_name(&self.prefix, self.written.len()));
        write_shard(&path, &self.buf, self.kind)?;
        self.written.push((path, self.buf.len()));
        self.buf.clear();
        Ok(())
    }

    /// Writes the last partial shard and returns every shard written, with its token count.
    pub fn finish(mut self) -> Result<Vec<(PathBuf, usize)>> {
        self.flush()?;
        Ok(self.written)
    }
}
