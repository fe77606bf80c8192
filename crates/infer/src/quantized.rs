//! A saved int8 model: what `cargo xtask quantize` writes and [`load_quantized`] reads back.
//!
//! A directory like a Hugging Face one, so `--model DIR` finds it:
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | the GPT-2 config, plus `"quantization_config": {"quant_method": "llm-e2e-q8_0", "block_size": 32}` |
//! | `model.safetensors` | the tensors below; metadata `{"format": "llm-e2e-q8_0"}` |
//! | `tokenizer.json` | the model's tokenizer (written by the command) |
//!
//! Tensor names follow Hugging Face's (`transformer.h.3.attn.c_attn`, …). Every projection
//! and the embedding `wte` is stored **`[out, in]`**, one row per output, with the
//! reduction along rows (unlike HF's `Conv1D`, which is `[in, out]`):
//!
//! | tensor | dtype | shape | value |
//! |---|---|---|---|
//! | `{name}.weight.q8` | I8 | `[out, in]` | `round(w / d)` in `[-127, 127]` |
//! | `{name}.weight.scale` | F32 | `[out, in / 32]` | `d = max |w| / 127` of each block of 32 |
//! | `{name}.weight` | F32 | `[out, in]` | a matrix left in f32 (`in` not a multiple of 32) |
//! | `{name}.bias`, `ln_*.weight`/`.bias`, `wpe.weight` | F32 | as HF | unchanged |
//!
//! so `w[o, i] = q8[o, i] · scale[o, i / 32]`, llama.cpp's Q8_0 with f32 scales.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Tensor, TensorData};
use llm_model::kernels::Q8_BLOCK;
use llm_model::{Gpt2Config, KernelBackend, Q8Matrix};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{InferError, Result};
use crate::model::{InferBlock, InferModel, Linear, Quant, Weight};

/// The `format` in the safetensors metadata and `quant_method` in config.json.
pub const FORMAT: &str = "llm-e2e-q8_0";
const WEIGHTS: &str = "model.safetensors";

fn err(path: &Path, message: impl std::fmt::Display) -> InferError {
    InferError::Weights(format!("{}: {message}", path.display()))
}

/// Whether `dir` holds a model saved by [`save_quantized`].
pub fn is_quantized_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v["quantization_config"]["quant_method"] == FORMAT)
}

/// The tensors of one model, by name, in the layout above.
enum Stored {
    F32(Vec<usize>, Vec<f32>),
    Q8(Arc<Q8Matrix>),
}

fn f32_of<B: KernelBackend>(t: &Tensor<B, 1>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

fn collect<B: KernelBackend>(model: &InferModel<B>) -> Vec<(String, Stored)> {
    let mut out = Vec::new();
    let weight = |out: &mut Vec<(String, Stored)>, name: &str, w: &Weight<B>| {
        let stored = match w {
            Weight::F32(t) => Stored::F32(
                t.dims().to_vec(),
                t.clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32"),
            ),
            Weight::Q8(q) => Stored::Q8(q.clone()),
        };
        out.push((format!("{name}.weight"), stored));
    };
    let vector = |out: &mut Vec<(String, Stored)>, name: String, t: &Tensor<B, 1>| {
        out.push((name, Stored::F32(t.dims().to_vec(), f32_of(t))));
    };
    let linear = |out: &mut Vec<(String, Stored)>, name: &str, l: &Linear<B>| {
        weight(out, name, &l.weight);
        if let Some(b) = &l.bias {
            vector(out, format!("{name}.bias"), b);
        }
    };
    let norm = |out: &mut Vec<(String, Stored)>, name: &str, ln: &LayerNorm<B>| {
        vector(out, format!("{name}.weight"), &ln.gamma.val());
        if let Some(b) = &ln.beta {
            vector(out, format!("{name}.bias"), &b.val());
        }
    };
    weight(&mut out, "transformer.wte", &model.wte);
    let wpe = &model.wpe;
    out.push((
        "transformer.wpe.weight".into(),
        Stored::F32(
            wpe.dims().to_vec(),
            wpe.clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32"),
        ),
    ));
    for (i, b) in model.h.iter().enumerate() {
        let p = format!("transformer.h.{i}");
        norm(&mut out, &format!("{p}.ln_1"), &b.ln_1);
        linear(&mut out, &format!("{p}.attn.c_attn"), &b.c_attn);
        linear(&mut out, &format!("{p}.attn.c_proj"), &b.c_proj);
        norm(&mut out, &format!("{p}.ln_2"), &b.ln_2);
        linear(&mut out, &format!("{p}.mlp.c_fc"), &b.c_fc);
        linear(&mut out, &format!("{p}.mlp.c_proj"), &b.mlp_c_proj);
    }
    norm(&mut out, "transformer.ln_f", &model.ln_f);
    if let Some(head) = &model.lm_head {
        linear(&mut out, "lm_head", head);
    }
    out
}

/// A raw safetensors view.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn raw_f32(shape: Vec<usize>, v: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Writes `model` (quantized with [`Quant::Q8`]) into `dir` in the layout above; each file
/// goes to a temporary name first, then is renamed into place.
pub fn save_quantized<B: KernelBackend>(model: &InferModel<B>, dir: &Path) -> Result<()> {
    if model.quant != Quant::Q8 {
        return Err(err(
            dir,
            "only a model loaded with Quant::Q8 is saved quantized",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let mut raws = Vec::new();
    for (name, stored) in collect(model) {
        match stored {
            Stored::F32(shape, v) => raws.push((name, raw_f32(shape, &v))),
            Stored::Q8(q) => {
                let qs = Raw {
                    dtype: Dtype::I8,
                    shape: vec![q.n, q.k],
                    bytes: q.qs.iter().map(|&x| x as u8).collect(),
                };
                raws.push((format!("{name}.q8"), qs));
                let shape = vec![q.n, q.k / Q8_BLOCK];
                raws.push((format!("{name}.scale"), raw_f32(shape, &q.scales)));
            }
        }
    }
    let views = raws.iter().map(|(n, r)| (n.clone(), r));
    let metadata = Some(HashMap::from([("format".to_string(), FORMAT.to_string())]));
    let path = dir.join(WEIGHTS);
    let bytes = safetensors::serialize(views, metadata).map_err(|e| err(&path, e))?;
    llm_common::fs::atomic_write(&path, &bytes).map_err(|e| err(&path, e))?;
    let mut config = model.config.to_hf_json();
    config["quantization_config"] =
        serde_json::json!({"quant_method": FORMAT, "block_size": Q8_BLOCK});
    let config = serde_json::to_string_pretty(&config).expect("config serialises");
    let path = dir.join("config.json");
    llm_common::fs::atomic_write(&path, config.as_bytes()).map_err(|e| err(&path, e))
}

/// Reads the tensors of a saved quantized model, checking each name, dtype and shape.
struct Reader<'a> {
    path: &'a Path,
    mmap: &'a Mmap,
    tensors: SafeTensors<'a>,
}

impl Reader<'_> {
    fn view(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8]> {
        let v = (self.tensors.tensor(name))
            .map_err(|_| err(self.path, format!("tensor {name:?} is missing")))?;
        if v.dtype() != dtype || v.shape() != shape {
            return Err(err(
                self.path,
                format!(
                    "tensor {name:?} is {:?} {:?}, expected {dtype:?} {shape:?}",
                    v.dtype(),
                    v.shape()
                ),
            ));
        }
        let bytes = v.data();
        Ok(bytes)
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bytes = self.view(name, Dtype::F32, shape)?;
        let v = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        llm_model::weights::release_pages(self.mmap, bytes);
        Ok(v)
    }

    fn vector<B: KernelBackend>(
        &self,
        name: &str,
        n: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let v = self.f32s(name, &[n])?;
        Ok(Tensor::from_data(TensorData::new(v, [n]), device))
    }

    fn weight<B: KernelBackend>(
        &self,
        name: &str,
        [n, k]: [usize; 2],
        device: &B::Device,
    ) -> Result<Weight<B>> {
        let w = format!("{name}.weight");
        if self.tensors.tensor(&w).is_ok() {
            let v = self.f32s(&w, &[n, k])?;
            return Ok(Weight::F32(Tensor::from_data(
                TensorData::new(v, [n, k]),
                device,
            )));
        }
        let bytes = self.view(&format!("{w}.q8"), Dtype::I8, &[n, k])?;
        let qs = bytes.iter().map(|&b| b as i8).collect();
        llm_model::weights::release_pages(self.mmap, bytes);
        let scales = self.f32s(&format!("{w}.scale"), &[n, k / Q8_BLOCK])?;
        let q = Q8Matrix::from_parts(n, k, qs, scales)
            .map_err(|e| err(self.path, format!("{w}: {e}")))?;
        Ok(Weight::Q8(Arc::new(q)))
    }

    fn linear<B: KernelBackend>(
        &self,
        name: &str,
        dims: [usize; 2],
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        Ok(Linear {
            weight: self.weight(name, dims, device)?,
            bias: match bias {
                true => Some(self.vector(&format!("{name}.bias"), dims[0], device)?),
                false => None,
            },
        })
    }

    fn norm<B: KernelBackend>(
        &self,
        name: &str,
        config: &Gpt2Config,
        device: &B::Device,
    ) -> Result<LayerNorm<B>> {
        let c = config.n_embd;
        let mut ln = LayerNormConfig::new(c)
            .with_epsilon(config.layer_norm_epsilon)
            .init(device);
        ln.gamma = Param::from_tensor(self.vector(&format!("{name}.weight"), c, device)?);
        ln.beta = Some(Param::from_tensor(self.vector(
            &format!("{name}.bias"),
            c,
            device,
        )?));
        Ok(ln)
    }
}

/// Loads a model saved by [`save_quantized`]; every missing or misshapen tensor is an error
/// naming it and the file.
pub fn load_quantized<B: KernelBackend>(dir: &Path, device: &B::Device) -> Result<InferModel<B>> {
    let config = Gpt2Config::from_json_file(dir.join("config.json"))?;
    let path = dir.join(WEIGHTS);
    let file = std::fs::File::open(&path).map_err(|e| err(&path, e))?;
    // SAFETY: a read-only map of a file we do not modify while it is open.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| err(&path, e))?;
    let tensors = SafeTensors::deserialize(&mmap)
        .map_err(|e| err(&path, format!("not a valid safetensors file: {e}")))?;
    let r = Reader {
        path: &path,
        mmap: &mmap,
        tensors,
    };
    let (c, v, inner) = (config.n_embd, config.vocab_size, config.inner_dim());
    let bias = config.qkv_bias;
    let h = (0..config.n_layer)
        .map(|i| {
            let p = format!("transformer.h.{i}");
            Ok(InferBlock {
                ln_1: r.norm(&format!("{p}.ln_1"), &config, device)?,
                c_attn: r.linear(&format!("{p}.attn.c_attn"), [3 * c, c], bias, device)?,
                c_proj: r.linear(&format!("{p}.attn.c_proj"), [c, c], true, device)?,
                ln_2: r.norm(&format!("{p}.ln_2"), &config, device)?,
                c_fc: r.linear(&format!("{p}.mlp.c_fc"), [inner, c], true, device)?,
                mlp_c_proj: r.linear(&format!("{p}.mlp.c_proj"), [c, inner], true, device)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let wpe = r.f32s("transformer.wpe.weight", &[config.n_positions, c])?;
    Ok(InferModel {
        wte: r.weight("transformer.wte", [v, c], device)?,
        wpe: Tensor::from_data(TensorData::new(wpe, [config.n_positions, c]), device),
        h,
        ln_f: r.norm("transformer.ln_f", &config, device)?,
        lm_head: match config.tie_word_embeddings {
            true => None,
            false => Some(r.linear("lm_head", [v, c], false, device)?),
        },
        config,
        quant: Quant::Q8,
    })
}
