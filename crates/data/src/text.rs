//! Reading corpora: plain-text files (one document each), JSON-lines files (one document
//! per line, its text in a field), both optionally gzip-compressed, and Parquet files (one
//! document per row, its text in a column; see [`crate::parquet`]). Errors name the file and
//! the byte, line or row.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::parquet::ParquetDocuments;

/// One document of a corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Where it came from: `path` or `path:line`.
    pub source: String,
    pub text: String,
}

/// The kinds of corpus file `prepare` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.txt` / `.txt.gz`: the whole file is one document.
    Text,
    /// `.jsonl` / `.jsonl.gz`: one JSON object per line.
    Jsonl,
    /// `.parquet`: one row per document (compressed inside).
    Parquet,
}

/// What [`collect_inputs`] accepts, for error messages.
pub const FORMATS: &str = ".txt or .jsonl (optionally .gz), or .parquet";

/// The format of a corpus file, from its name.
pub fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".parquet") {
        return Some(Format::Parquet);
    }
    let name = name.strip_suffix(".gz").unwrap_or(name);
    if name.ends_with(".txt") {
        Some(Format::Text)
    } else if name.ends_with(".jsonl") {
        Some(Format::Jsonl)
    } else {
        None
    }
}

/// Expands files and directories (recursively, sorted) into corpus files.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| DataError::io(path, e))?
                .map(|e| e.map(|e| e.path()).map_err(|err| DataError::io(path, err)))
                .collect::<Result<_>>()?;
            entries.sort();
            let nested: Vec<PathBuf> = entries
                .into_iter()
                .filter(|p| p.is_dir() || format_of(p).is_some())
                .collect();
            out.extend(collect_inputs(&nested)?);
        } else if format_of(path).is_some() {
            out.push(path.clone());
        } else {
            return Err(DataError::file(
                path,
                format!("unknown corpus format: expected {FORMATS}"),
            ));
        }
    }
    Ok(out)
}

fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// Reads a whole text file (decompressing `.gz`), failing with the byte offset of the first
/// invalid UTF-8 sequence.
pub fn read_text(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.into(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Documents of a JSON-lines file, read lazily line by line.
pub struct JsonlDocuments {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    field: String,
    line: usize,
    offset: usize,
    buf: Vec<u8>,
}

impl JsonlDocuments {
    pub fn open(path: &Path, field: &str) -> Result<Self> {
        Ok(JsonlDocuments {
            path: path.into(),
            reader: BufReader::new(open(path)?),
            field: field.to_string(),
            line: 0,
            offset: 0,
            buf: Vec::new(),
        })
    }

    fn parse(&self, bytes: &[u8]) -> Result<String> {
        let err = |message: String| DataError::Jsonl {
            path: self.path.clone(),
            line: self.line,
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
            path: self.path.clone(),
            offset: self.offset + e.valid_up_to(),
        })?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        match value.get(&self.field) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(format!("field {:?} is not a string", self.field))),
            None => Err(err(format!("no field {:?}", self.field))),
        }
    }
}

impl Iterator for JsonlDocuments {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        loop {
            self.buf.clear();
            let n = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            };
            self.line += 1;
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                self.offset += n;
                continue;
            }
            let result = self.parse(line).map(|text| Document {
                source: format!("{}:{}", self.path.display(), self.line),
                text,
            });
            self.offset += n;
            return Some(result);
        }
    }
}

/// Every document of the given corpus files, in order: a text file is one document, a JSONL
/// file one per line and a Parquet file one per row (`field` holds the text).
pub fn documents<'a>(
    files: &'a [PathBuf],
    field: &'a str,
) -> impl Iterator<Item = Result<Document>> + Send + 'a {
    files.iter().flat_map(
        move |path| -> Box<dyn Iterator<Item = Result<Document>> + Send> {
            match format_of(path) {
                Some(Format::Text) => {
                    Box::new(std::iter::once(read_text(path).map(|text| Document {
                        source: path.display().to_string(),
                        text,
                    })))
                }
                Some(Format::Jsonl) => match JsonlDocuments::open(path, field) {
                    Ok(docs) => Box::new(docs),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
                Some(Format::Parquet) => match ParquetDocuments::open(path, field) {
                    Ok(docs) => Box::new(docs),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
                None => Box::new(std::iter::once(Err(DataError::file(
                    path,
                    "unknown corpus format",
                )))),
            }
        },
    )
}
