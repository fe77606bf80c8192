//! GPT-2 (or one of its variants) laid out for generation: every projection as `[out, in]`
//! (the layout decode's dot products stream), f32 or Q8_0, and a forward pass over
//! [`Segment`]s of new tokens that reads and extends a [`SlotCache`].
//!
//! ```text
//! ids ─▶ wte ─┐                            (only each segment's last token from here)
//!             ├─▶ + ─▶ h[0] ─▶ … ─▶ h[n-1] ─▶ ln_f ─▶ · wteᵀ ─▶ logits [segments, vocab]
//! pos ─▶ wpe ─┘  (learned positions only)
//! h[i]: x + c_proj(attention over the cache(rope(c_attn(ln_1(x))))), then x + ffn(ln_2(x))
//! ```
//!
//! The variants of [`Gpt2Config`] run here too: RoPE turns each new token's queries and
//! keys at its own position before they are cached, the cache holds `n_kv_head` heads,
//! a window limits what attention sees, and `ffn` is GELU, SwiGLU or a mixture of experts
//! ([`FeedForward`]).

use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};
use llm_model::kernels::{simd, Q8_BLOCK};
use llm_model::sampling::argmax;
use llm_model::{
    Block, Gpt, Gpt2Config, KernelBackend, Norm, Position, Proj, Q8Matrix, Rope, Segment,
};

use crate::cache::SlotCache;
use crate::ffn::{FeedForward, InferMlp, InferMoe};

/// How weights are held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quant {
    /// f32, as trained.
    #[default]
    F32,
    /// int8 Q8_0 (blocks of 32 along the reduction, one f32 scale each) for every
    /// projection and `wte`; LayerNorms, biases and `wpe` stay f32.
    Q8,
}

impl std::str::FromStr for Quant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "none" => Ok(Quant::F32),
            "q8" | "q8_0" => Ok(Quant::Q8),
            _ => Err(format!("unknown quantization {s:?}: expected f32 or q8")),
        }
    }
}

/// A weight matrix `[out, in]`.
#[derive(Clone, Debug)]
pub enum Weight<B: KernelBackend> {
    F32(Tensor<B, 2>),
    Q8(Arc<Q8Matrix>),
}

impl<B: KernelBackend> Weight<B> {
    /// `w [out, in]` in f32, quantized if asked and its `in` is a multiple of 32.
    pub fn new(w: Tensor<B, 2>, quant: Quant) -> Self {
        let [n, k] = w.dims();
        match quant {
            Quant::Q8 if k.is_multiple_of(Q8_BLOCK) => {
                // No copy: the tensor held the only reference.
                let values: Vec<f32> = w.into_data().convert::<f32>().into_vec().unwrap();
                Weight::Q8(Arc::new(Q8Matrix::quantize(&values, n, k)))
            }
            _ => Weight::F32(w),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Weight::F32(w) => w.dims(),
            Weight::Q8(q) => [q.n, q.k],
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::F32(w) => 4 * w.shape().num_elements(),
            Weight::Q8(q) => q.bytes(),
        }
    }

    /// `x [m, in] · wᵀ + bias`: `[m, out]`.
    pub fn linear(&self, x: Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 2> {
        let x = x.into_primitive().tensor();
        let bias = bias.map(|b| b.clone().into_primitive().tensor());
        let y = match self {
            Weight::F32(w) => B::linear_nt(x, w.clone().into_primitive().tensor(), bias),
            Weight::Q8(q) => B::linear_q8(x, q, bias),
        };
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }

    /// Rows `ids` (an embedding lookup): `[ids, in]`.
    fn rows(&self, ids: &[u32], device: &B::Device) -> Tensor<B, 2> {
        match self {
            Weight::F32(w) => {
                let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let n = ids.len();
                w.clone().select(
                    0,
                    Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), device),
                )
            }
            Weight::Q8(q) => {
                let mut out = vec![0f32; ids.len() * q.k];
                for (row, &id) in out.chunks_mut(q.k).zip(ids) {
                    q.dequantize_row_into(id as usize, row);
                }
                Tensor::from_data(TensorData::new(out, [ids.len(), q.k]), device)
            }
        }
    }
}

/// A projection for generation: `y = x · Wᵀ + b`.
#[derive(Clone, Debug)]
pub struct Linear<B: KernelBackend> {
    pub weight: Weight<B>,
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: KernelBackend> Linear<B> {
    /// From a [`Proj`] (`[in, out]`, HF's `Conv1D`), transposed once to `[out, in]`.
    pub(crate) fn from_proj(p: Proj<B>, quant: Quant) -> Self {
        let w = p.weight.into_value();
        let device = w.device();
        let w_t = Tensor::from_data(w.transpose().into_data(), &device); // [out, in], contiguous
        Linear {
            weight: Weight::new(w_t, quant),
            bias: p.bias.map(|b| b.val()),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.weight.linear(x, self.bias.as_ref())
    }
}

/// One block, `h[i]`.
#[derive(Clone, Debug)]
pub struct InferBlock<B: KernelBackend> {
    pub ln_1: Norm<B>,
    /// `[(n_head + 2·n_kv_head)·head_dim, n_embd]`: queries, keys, values.
    pub c_attn: Linear<B>,
    /// Attention's output projection.
    pub c_proj: Linear<B>,
    pub ln_2: Norm<B>,
    pub mlp: FeedForward<B>,
}

impl<B: KernelBackend> InferBlock<B> {
    fn from_block(block: Block<B>, quant: Quant) -> Self {
        let mlp = match (block.mlp, block.moe) {
            (Some(mlp), _) => FeedForward::Mlp(InferMlp::from_mlp(mlp, quant)),
            (None, Some(moe)) => FeedForward::Moe(InferMoe::from_moe(moe, quant)),
            (None, None) => unreachable!("a block has an mlp or a moe"),
        };
        InferBlock {
            ln_1: block.ln_1,
            c_attn: Linear::from_proj(block.attn.c_attn, quant),
            c_proj: Linear::from_proj(block.attn.c_proj, quant),
            ln_2: block.ln_2,
            mlp,
        }
    }

    /// Every projection.
    pub fn linears(&self) -> Vec<&Linear<B>> {
        let mut out = vec![&self.c_attn, &self.c_proj];
        out.extend(self.mlp.linears());
        out
    }
}

/// A model for generation.
#[derive(Clone, Debug)]
pub struct InferModel<B: KernelBackend> {
    /// `[vocab, n_embd]`: the embedding, and the LM head when tied.
    pub wte: Weight<B>,
    /// `[n_positions, n_embd]`, for learned positions.
    pub wpe: Option<Tensor<B, 2>>,
    /// RoPE's rotations at every position, for rotary positions.
    pub rope: Option<Rope<B>>,
    pub h: Vec<InferBlock<B>>,
    pub ln_f: Norm<B>,
    /// An untied head `[vocab, n_embd]`.
    pub lm_head: Option<Linear<B>>,
    pub config: Gpt2Config,
    pub quant: Quant,
}

impl<B: KernelBackend> InferModel<B> {
    /// Takes a model's weights (LoRA adapters merged), transposing each projection once.
    pub fn from_gpt(model: Gpt<B>, quant: Quant) -> Self {
        let model = if model.has_lora() {
            model.merge_lora()
        } else {
            model
        };
        let config = model.config.clone();
        let device = model.ln_f.gamma.device();
        // Each f32 weight is consumed as it is converted (and, loaded from safetensors, read
        // only now): an int8 model never holds all of its f32 weights, `wte` first.
        let wte = Weight::new(model.wte.weight.into_value(), quant);
        let h = (model.h.into_iter())
            .map(|b| InferBlock::from_block(b, quant))
            .collect();
        InferModel {
            wte,
            wpe: model.wpe.map(|wpe| wpe.weight.into_value()),
            rope: rope_table(&config, &device),
            h,
            ln_f: model.ln_f,
            lm_head: model.lm_head.map(|p| Linear::from_proj(p, quant)),
            config,
            quant,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.wte.dims()[0]
    }

    pub fn n_positions(&self) -> usize {
        self.config.n_positions
    }

    pub fn device(&self) -> B::Device {
        self.ln_f.gamma.device()
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> usize {
        let ln = |n: &Norm<B>| 4 * self.config.n_embd * (1 + usize::from(n.beta.is_some()));
        let lin = |l: &Linear<B>| l.weight.bytes() + l.bias.as_ref().map_or(0, |b| 4 * b.dims()[0]);
        let blocks: usize = (self.h.iter())
            .map(|b| ln(&b.ln_1) + ln(&b.ln_2) + b.linears().into_iter().map(lin).sum::<usize>())
            .sum();
        self.wte.bytes()
            + self
                .wpe
                .as_ref()
                .map_or(0, |w| 4 * w.shape().num_elements())
            + ln(&self.ln_f)
            + self.lm_head.as_ref().map_or(0, lin)
            + blocks
    }

    /// Runs the new tokens `ids` (the segments' tokens, one segment after another) through
    /// the model, writing their keys and values into `cache`. Returns the logits of each
    /// segment's last token, `[segments, vocab]`. Ids and positions must be in range.
    pub fn forward(
        &self,
        ids: &[u32],
        segments: &[Segment],
        cache: &mut SlotCache<B>,
    ) -> Tensor<B, 2> {
        let last: Vec<usize> = (segments.iter())
            .scan(0, |end, s| {
                *end += s.len;
                Some(*end - 1)
            })
            .collect();
        self.forward_rows(ids, segments, cache, &last)
    }

    /// As [`InferModel::forward`], but the logits of the new tokens at `rows` (indices
    /// into `ids`), `[rows, vocab]`: a prompt to score gives all of its rows, the others
    /// their last.
    pub fn forward_rows(
        &self,
        ids: &[u32],
        segments: &[Segment],
        cache: &mut SlotCache<B>,
        rows: &[usize],
    ) -> Tensor<B, 2> {
        B::run_pass(|| {
            let x = self.forward_hidden(ids, segments, cache); // [n, c]
            let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let k = rows.len();
            let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [k]), &self.device());
            self.head(x.select(0, rows)) // [rows, vocab]
        })
    }

    /// As [`InferModel::forward`], but the logits of every new token, `[ids, vocab]`
    /// (to score a text).
    pub fn forward_all(
        &self,
        ids: &[u32],
        segments: &[Segment],
        cache: &mut SlotCache<B>,
    ) -> Tensor<B, 2> {
        B::run_pass(|| self.head(self.forward_hidden(ids, segments, cache)))
    }

    /// `ln_f`, then the LM head: `[m, c]` to `[m, vocab]`.
    fn head(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.ln_f.forward(x);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => self.wte.linear(x, None),
        }
    }

    /// The blocks over the new tokens: `[n, c]` before `ln_f`.
    fn forward_hidden(
        &self,
        ids: &[u32],
        segments: &[Segment],
        cache: &mut SlotCache<B>,
    ) -> Tensor<B, 2> {
        let device = self.device();
        let positions: Vec<i64> = segments
            .iter()
            .flat_map(|s| (s.pos..s.pos + s.len).map(|p| p as i64))
            .collect();
        let n = positions.len();
        let pos = Tensor::<B, 1, Int>::from_data(TensorData::new(positions, [n]), &device);
        let mut x = self.wte.rows(ids, &device); // [n, c]
        if let Some(wpe) = &self.wpe {
            x = x + wpe.clone().select(0, pos.clone());
        }
        let rope = self.rope.as_ref().map(|rope| rope.rows(pos)); // [1, n, 1, d]
        let window = self.config.attention_window;
        for (i, block) in self.h.iter().enumerate() {
            let qkv = block.c_attn.forward(block.ln_1.forward(x.clone())); // [n, (h + 2·kv)·d]
            let qkv = self.rotate(qkv, rope.as_ref());
            let a = cache.attend(i, qkv, segments, window); // [n, c]
            x = x + block.c_proj.forward(a);
            x = x.clone() + block.mlp.forward(block.ln_2.forward(x)); // [n, c]
        }
        x
    }

    /// RoPE on the queries and keys of `qkv [n, (h + 2·kv)·d]`, each row by its own
    /// rotation ([`Rope::rows`]); unchanged without rotary positions.
    fn rotate(&self, qkv: Tensor<B, 2>, rope: Option<&Rope<B>>) -> Tensor<B, 2> {
        let Some(rope) = rope else {
            return qkv;
        };
        let c = &self.config;
        let (h, kv, d) = (c.n_head, c.kv_heads(), c.head_dim());
        let n = qkv.dims()[0];
        let heads = |first: usize, count: usize| {
            let part = qkv
                .clone()
                .narrow(1, first * d, count * d)
                .reshape([1, n, count, d]);
            rope.apply(part).reshape([n, count * d]) // [n, count·d]
        };
        let v = qkv.clone().narrow(1, (h + kv) * d, kv * d); // [n, kv·d]
        Tensor::cat(vec![heads(0, h), heads(h, kv), v], 1) // [n, (h + 2·kv)·d]
    }

    /// Mean loss and perplexity on `ids` with sliding windows of `context` tokens every
    /// `stride` (the method of [`llm_model::perplexity`]), through this layout's kernels:
    /// the way to compare int8 weights with f32.
    pub fn perplexity(
        &self,
        ids: &[u32],
        context: usize,
        stride: usize,
    ) -> crate::Result<llm_model::Perplexity> {
        let (mut nll, mut tokens) = (0f64, 0usize);
        let windows = self.scored_rows(ids, context, stride, |[row], next| {
            nll += simd::log_sum_exp(row) - row[next as usize] as f64;
            tokens += 1;
        })?;
        let loss = nll / tokens as f64;
        Ok(llm_model::Perplexity {
            loss,
            perplexity: loss.exp(),
            tokens,
            windows,
        })
    }

    /// How often this model's most likely next token is `reference`'s, over the positions
    /// [`InferModel::perplexity`] scores: int8 weights against f32, say. Returns
    /// `(agreeing, scored)`.
    pub fn top1_agreement(
        &self,
        reference: &InferModel<B>,
        ids: &[u32],
        context: usize,
        stride: usize,
    ) -> crate::Result<(usize, usize)> {
        let pair = [self, reference];
        let (mut agree, mut scored) = (0, 0);
        walk_scored_rows(&pair, ids, context, stride, |[a, b], _| {
            agree += usize::from(argmax(a) == argmax(b));
            scored += 1;
        })?;
        Ok((agree, scored))
    }

    /// Runs `ids` in sliding windows and calls `row([logits], next)` for each scored
    /// position: its logits and the token that follows. Returns the number of windows.
    fn scored_rows(
        &self,
        ids: &[u32],
        context: usize,
        stride: usize,
        row: impl FnMut([&[f32]; 1], u32),
    ) -> crate::Result<usize> {
        walk_scored_rows(&[self], ids, context, stride, row)
    }
}

/// [`InferModel::perplexity`]'s windows through `N` models at once, each with its own
/// cache: `row(logits of each model, next token)` for every scored position.
fn walk_scored_rows<B: KernelBackend, const N: usize>(
    models: &[&InferModel<B>; N],
    ids: &[u32],
    context: usize,
    stride: usize,
    mut row: impl FnMut([&[f32]; N], u32),
) -> crate::Result<usize> {
    let first = models[0];
    let n_positions = first.n_positions();
    if ids.len() < 2 || !(2..=n_positions).contains(&context) || stride == 0 || stride > context {
        return Err(crate::InferError::Param {
            param: "context",
            message: format!("needs at least 2 tokens, 2 ≤ context ≤ {n_positions} and 1 ≤ stride ≤ context; got {} tokens, context {context}, stride {stride}", ids.len()),
        });
    }
    let vocab = first.vocab_size();
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(crate::InferError::TokenOutOfRange {
            id,
            vocab_size: vocab,
        });
    }
    let mut caches: Vec<SlotCache<B>> = models
        .iter()
        .map(|m| SlotCache::new(&m.config, 1, &m.device()))
        .collect();
    let all = llm_model::windows(ids.len(), context, stride);
    for w in &all {
        let seg = [Segment {
            slot: 0,
            pos: 0,
            len: w.end - w.begin,
        }];
        let logits: Vec<Vec<f32>> = models
            .iter()
            .zip(caches.iter_mut())
            .map(|(m, cache)| {
                let l = m.forward_all(&ids[w.begin..w.end], &seg, cache);
                l.into_data().convert::<f32>().to_vec().expect("f32")
            })
            .collect();
        for (i, p) in (w.begin..w.end).enumerate() {
            if p + 1 < w.end && p + 1 >= w.score_from {
                let rows = std::array::from_fn(|m| &logits[m][i * vocab..(i + 1) * vocab]);
                row(rows, ids[p + 1]);
            }
        }
    }
    Ok(all.len())
}

/// RoPE's rotations at every position of the context, for a model with rotary positions.
pub(crate) fn rope_table<B: KernelBackend>(
    config: &Gpt2Config,
    device: &B::Device,
) -> Option<Rope<B>> {
    (config.position == Position::Rope).then(|| {
        Rope::new(
            config.rope_theta,
            config.head_dim(),
            0..config.n_positions,
            device,
        )
    })
}
