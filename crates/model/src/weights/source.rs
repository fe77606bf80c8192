//! Reading named tensors from weight files: safetensors (memory-mapped) and PyTorch's
//! `pytorch_model.bin` (zip + restricted pickle, read by `burn-store`; no code runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use burn_store::TensorSnapshot;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

enum Backing {
    Safetensors(Arc<Mmap>),
    Pytorch(BTreeMap<String, TensorSnapshot>),
}

/// Drops the mapped pages of `bytes` (a slice of `mmap`) from this process's memory once
/// they are copied, so that loading never holds the file and its copy at once: peak RSS
/// stays near the weights' size. The pages are read from the file again if touched.
pub fn release_pages(mmap: &Mmap, bytes: &[u8]) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = bytes.as_ptr() as usize - mmap.as_ptr() as usize;
        let (from, to) = (
            start.next_multiple_of(PAGE),
            (start + bytes.len()) / PAGE * PAGE,
        );
        if to > from {
            // SAFETY: a read-only file mapping; dropped pages are refilled from the file.
            let _ = unsafe {
                mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (mmap, bytes);
}

/// A weight file: tensor names, shapes, and their values as f32 on request.
pub struct WeightFile {
    path: PathBuf,
    shapes: BTreeMap<String, Vec<usize>>,
    backing: Backing,
}

impl WeightFile {
    /// Opens a `.safetensors` file, or a PyTorch `.bin`/`.pt`/`.pth` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        if is_safetensors {
            Self::open_safetensors(path)
        } else {
            Self::open_pytorch(path)
        }
    }

    fn open_safetensors(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only; like every reader of weight files we assume the file
        // is not truncated by another process while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let tensors = SafeTensors::deserialize(&mmap).map_err(|e| {
            ModelError::file(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        let shapes = tensors
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        Ok(WeightFile {
            path: path.into(),
            shapes,
            backing: Backing::Safetensors(Arc::new(mmap)),
        })
    }

    fn open_pytorch(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let reader = PytorchReader::new(path).map_err(|e| {
            ModelError::file(
                path,
                format!("not a readable PyTorch checkpoint (truncated or corrupt?): {e}"),
            )
        })?;
        let tensors: BTreeMap<String, TensorSnapshot> = reader.into_tensors().into_iter().collect();
        let shapes = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.shape.to_vec()))
            .collect();
        Ok(WeightFile {
            path: path.into(),
            shapes,
            backing: Backing::Pytorch(tensors),
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name with its shape, sorted by name.
    pub fn shapes(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.shapes
    }

    /// The values of a tensor, converted to f32 (from f32, f16, bf16 or f64).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        match &self.backing {
            Backing::Safetensors(mmap) => read_safetensors(&self.path, mmap, name),
            Backing::Pytorch(tensors) => {
                let bad = |m: String| ModelError::file(&self.path, format!("tensor {name:?}: {m}"));
                let t = tensors
                    .get(name)
                    .ok_or_else(|| bad("not in the file".into()))?;
                match t.dtype {
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {}
                    other => return Err(bad(format!("dtype {other:?} is not a float type"))),
                }
                let data = t.to_data().map_err(|e| bad(format!("{e:?}")))?;
                Ok(data.iter::<f32>().collect())
            }
        }
    }

    /// A tensor to read later, checked now: it is in the file, of a float type, and every
    /// value is finite (one pass over the file's pages, released as it goes). `None` for a
    /// PyTorch file, which is read whole ([`WeightFile::read_f32`]).
    pub fn deferred_f32(&self, name: &str) -> Result<Option<Deferred>> {
        let Backing::Safetensors(mmap) = &self.backing else {
            return Ok(None);
        };
        let mut finite = true;
        decode_safetensors(&self.path, mmap, name, |piece, _| {
            finite &= piece.iter().all(|v| v.is_finite());
        })?;
        if !finite {
            return Err(ModelError::NonFinite {
                path: Some(self.path.clone()),
                tensor: name.into(),
            });
        }
        Ok(Some(Deferred {
            path: self.path.clone(),
            mmap: mmap.clone(),
            name: name.into(),
        }))
    }
}

/// A checked tensor of a memory-mapped safetensors file, read when a model first uses it
/// (`Param::uninitialized`): a model that is converted as it is read (int8 weights) never
/// holds all of its f32 weights at once.
#[derive(Clone)]
pub struct Deferred {
    path: PathBuf,
    mmap: Arc<Mmap>,
    name: String,
}

impl Deferred {
    /// The values, as [`WeightFile::read_f32`] reads them.
    pub fn read(&self) -> Vec<f32> {
        read_safetensors(&self.path, &self.mmap, &self.name)
            .expect("the tensor was checked when the file was loaded")
    }
}

/// Tensor `name` of a safetensors file, whole, in f32 (allocated once, at its size).
fn read_safetensors(path: &Path, mmap: &Mmap, name: &str) -> Result<Vec<f32>> {
    let mut values = Vec::new();
    decode_safetensors(path, mmap, name, |piece, total| {
        values.reserve_exact(total - values.len());
        values.extend(piece)
    })?;
    Ok(values)
}

/// Decodes tensor `name` of a safetensors file to f32 in pieces, handing each to `sink`
/// with the tensor's number of values, and releases the file's pages once decoded: the file and a copy of it are never both
/// whole in memory (`wte` alone is 154 MB).
fn decode_safetensors(
    path: &Path,
    mmap: &Mmap,
    name: &str,
    mut sink: impl FnMut(&[f32], usize),
) -> Result<()> {
    let bad = |m: String| ModelError::file(path, format!("tensor {name:?}: {m}"));
    let tensors = SafeTensors::deserialize(mmap).map_err(|e| bad(e.to_string()))?;
    let view = tensors.tensor(name).map_err(|e| bad(e.to_string()))?;
    let decode: fn(&[u8], &mut Vec<f32>) = match view.dtype() {
        Dtype::F32 => |b, out| {
            out.extend(
                b.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            )
        },
        Dtype::F16 => |b, out| {
            out.extend(
                b.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            )
        },
        Dtype::BF16 => |b, out| {
            out.extend(
                b.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            )
        },
        Dtype::F64 => |b, out| {
            out.extend(
                b.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
            )
        },
        other => return Err(bad(format!("dtype {other:?} is not a float type"))),
    };
    const PIECE: usize = 8 << 20;
    let per_value = view.dtype().bitsize() / 8;
    let total = view.data().len() / per_value;
    let mut buf = Vec::with_capacity(PIECE.min(view.data().len()) / per_value);
    for piece in view.data().chunks(PIECE) {
        buf.clear();
        decode(piece, &mut buf);
        sink(&buf, total);
        release_pages(mmap, piece);
    }
    Ok(())
}
