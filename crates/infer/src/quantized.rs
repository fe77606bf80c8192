//! A saved int8 model: what `cargo xtask quantize` writes and [`load_quantized`] reads back.
//!
//! A directory like a Hugging Face one, so `--model DIR` finds it:
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | the model's config (GPT-2's, or a Llama's for that family), plus `"quantization_config": {"quant_method": "llm-e2e-q8_0", "block_size": 32}` |
//! | `model.safetensors` | the tensors below; metadata `{"format": "llm-e2e-q8_0"}` |
//! | `tokenizer.json` | the model's tokenizer (written by the command) |
//!
//! Tensor names follow Hugging Face's GPT-2 (`transformer.h.3.attn.c_attn`, …) for every
//! architecture, as llm-e2e names its modules: a variant leaves out what it lacks (`wpe`
//! with rotary positions, biases, an RMSNorm's `.bias`), its `c_attn` holds `n_kv_head`
//! key/value heads, a gated `c_fc` holds the gate then the up projection, and a mixture of
//! experts has `h.N.moe.router` and `h.N.moe.experts.J.{c_fc,c_proj}` in place of
//! `h.N.mlp`. Every projection
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
use burn::tensor::{Tensor, TensorData};
use llm_model::kernels::Q8_BLOCK;
use llm_model::{Gpt2Config, KernelBackend, MlpKind, Norm, Position, Q8Matrix};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{InferError, Result};
use crate::ffn::{FeedForward, InferMlp, InferMoe};
use crate::model::{rope_table, InferBlock, InferModel, Linear, Quant, Weight};

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

/// A tensor of any rank as stored f32 values with its shape.
fn stored_f32<B: KernelBackend, const D: usize>(t: &Tensor<B, D>) -> Stored {
    let values = t
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data converts to f32");
    Stored::F32(t.dims().to_vec(), values)
}

/// Every tensor of `model` under its saved name, in order.
fn collect<B: KernelBackend>(model: &InferModel<B>) -> Vec<(String, Stored)> {
    let mut out = Collect(Vec::new());
    out.weight("transformer.wte", &model.wte);
    if let Some(wpe) = &model.wpe {
        out.matrix("transformer.wpe.weight".into(), wpe);
    }
    for (i, b) in model.h.iter().enumerate() {
        let p = format!("transformer.h.{i}");
        out.norm(&format!("{p}.ln_1"), &b.ln_1);
        out.linear(&format!("{p}.attn.c_attn"), &b.c_attn);
        out.linear(&format!("{p}.attn.c_proj"), &b.c_proj);
        out.norm(&format!("{p}.ln_2"), &b.ln_2);
        match &b.mlp {
            FeedForward::Mlp(mlp) => out.mlp(&format!("{p}.mlp"), mlp),
            FeedForward::Moe(moe) => {
                out.linear(&format!("{p}.moe.router"), &moe.router);
                for (j, expert) in moe.experts.iter().enumerate() {
                    out.mlp(&format!("{p}.moe.experts.{j}"), expert);
                }
            }
        }
    }
    out.norm("transformer.ln_f", &model.ln_f);
    if let Some(head) = &model.lm_head {
        out.linear("lm_head", head);
    }
    out.0
}

/// The tensors collected so far.
struct Collect(Vec<(String, Stored)>);

impl Collect {
    fn matrix<B: KernelBackend>(&mut self, name: String, t: &Tensor<B, 2>) {
        self.0.push((name, stored_f32(t)));
    }

    fn vector<B: KernelBackend>(&mut self, name: String, t: &Tensor<B, 1>) {
        self.0.push((name, stored_f32(t)));
    }

    fn weight<B: KernelBackend>(&mut self, name: &str, w: &Weight<B>) {
        match w {
            Weight::F32(t) => self.matrix(format!("{name}.weight"), t),
            Weight::Q8(q) => self
                .0
                .push((format!("{name}.weight"), Stored::Q8(q.clone()))),
        }
    }

    fn linear<B: KernelBackend>(&mut self, name: &str, l: &Linear<B>) {
        self.weight(name, &l.weight);
        if let Some(b) = &l.bias {
            self.vector(format!("{name}.bias"), b);
        }
    }

    fn mlp<B: KernelBackend>(&mut self, name: &str, mlp: &InferMlp<B>) {
        self.linear(&format!("{name}.c_fc"), &mlp.c_fc);
        self.linear(&format!("{name}.c_proj"), &mlp.c_proj);
    }

    fn norm<B: KernelBackend>(&mut self, name: &str, ln: &Norm<B>) {
        self.vector(format!("{name}.weight"), &ln.gamma.val());
        if let Some(b) = &ln.beta {
            self.vector(format!("{name}.bias"), &b.val());
        }
    }
}

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
    ) -> Result<Norm<B>> {
        let c = config.n_embd;
        let mut ln = Norm::new(config.norm, c, config.layer_norm_epsilon, device);
        ln.gamma = Param::from_tensor(self.vector(&format!("{name}.weight"), c, device)?);
        if ln.beta.is_some() {
            let beta = self.vector(&format!("{name}.bias"), c, device)?;
            ln.beta = Some(Param::from_tensor(beta));
        }
        Ok(ln)
    }

    /// A dense MLP under `name` (`{name}.c_fc`, `{name}.c_proj`).
    fn mlp<B: KernelBackend>(
        &self,
        name: &str,
        config: &Gpt2Config,
        device: &B::Device,
    ) -> Result<InferMlp<B>> {
        let (c, inner, bias) = (config.n_embd, config.inner_dim(), config.bias);
        let gated = config.mlp != MlpKind::Gelu;
        let fc = if gated { 2 * inner } else { inner };
        Ok(InferMlp {
            c_fc: self.linear(&format!("{name}.c_fc"), [fc, c], bias, device)?,
            c_proj: self.linear(&format!("{name}.c_proj"), [c, inner], bias, device)?,
            gated,
        })
    }

    /// Block `i`'s feed-forward part.
    fn feed_forward<B: KernelBackend>(
        &self,
        p: &str,
        config: &Gpt2Config,
        device: &B::Device,
    ) -> Result<FeedForward<B>> {
        if config.mlp != MlpKind::Moe {
            return Ok(FeedForward::Mlp(self.mlp(
                &format!("{p}.mlp"),
                config,
                device,
            )?));
        }
        let (c, e) = (config.n_embd, config.n_expert);
        Ok(FeedForward::Moe(InferMoe {
            router: self.linear(&format!("{p}.moe.router"), [e, c], false, device)?,
            experts: (0..e)
                .map(|j| self.mlp(&format!("{p}.moe.experts.{j}"), config, device))
                .collect::<Result<_>>()?,
            n_active: config.n_expert_active,
        }))
    }

    /// Block `i`.
    fn block<B: KernelBackend>(
        &self,
        i: usize,
        config: &Gpt2Config,
        device: &B::Device,
    ) -> Result<InferBlock<B>> {
        let p = format!("transformer.h.{i}");
        let c = config.n_embd;
        let qkv = [config.qkv_dim(), c];
        Ok(InferBlock {
            ln_1: self.norm(&format!("{p}.ln_1"), config, device)?,
            c_attn: self.linear(&format!("{p}.attn.c_attn"), qkv, config.attn_bias(), device)?,
            c_proj: self.linear(&format!("{p}.attn.c_proj"), [c, c], config.bias, device)?,
            ln_2: self.norm(&format!("{p}.ln_2"), config, device)?,
            mlp: self.feed_forward(&p, config, device)?,
        })
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
    let (c, v, t) = (config.n_embd, config.vocab_size, config.n_positions);
    let h = (0..config.n_layer)
        .map(|i| r.block(i, &config, device))
        .collect::<Result<Vec<_>>>()?;
    let wpe = match config.position {
        Position::Learned => {
            let wpe = r.f32s("transformer.wpe.weight", &[t, c])?;
            Some(Tensor::from_data(TensorData::new(wpe, [t, c]), device))
        }
        _ => None,
    };
    Ok(InferModel {
        wte: r.weight("transformer.wte", [v, c], device)?,
        wpe,
        rope: rope_table(&config, device),
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
