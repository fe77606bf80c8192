//! GPT-2, module by module, named as in OpenAI's checkpoint.
//!
//! ```text
//! ids ─▶ wte ─┐
//!             ├─▶ + ─▶ drop ─▶ h[0] ─▶ … ─▶ h[n_layer-1] ─▶ ln_f ─▶ · wteᵀ ─▶ logits
//! pos ─▶ wpe ─┘
//!
//! h[i]:  x ─▶ x + attn(ln_1(x)) ─▶ x + mlp(ln_2(x))        (pre-LayerNorm, residual)
//! mlp:   c_fc ─▶ GELU (tanh) ─▶ c_proj ─▶ dropout
//! ```

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};

use crate::attention::Attention;
use crate::cache::KvCache;
use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::proj::{LoraConfig, Proj};

/// GPT-2's MLP: `c_fc` (widen ×4) → GELU (tanh approximation) → `c_proj` → dropout.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[n_embd, n_inner]`.
    pub c_fc: Proj<B>,
    /// `[n_inner, n_embd]`.
    pub c_proj: Proj<B>,
    pub dropout: Dropout,
}

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.c_fc.forward(x); // [b, t, n_inner]
        let x = gelu_tanh(x);
        self.dropout.forward(self.c_proj.forward(x)) // [b, t, n_embd]
    }
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`),
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as the identical
/// `x · sigmoid(2·√(2/π)·(x + 0.044715·x³)) = x / (1 + exp(−z))`: on the CPU `exp` is several
/// times faster than `tanh` and `powf`, which made GELU a quarter of GPT-2's forward time.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let z = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * -TWO_SQRT_2_OVER_PI; // −z
    x / (z.exp() + 1.0)
}

/// One transformer block, `h[i]`: pre-LayerNorm attention and MLP, each added to the
/// residual stream.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln_1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub ln_2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut crate::cache::LayerCache<B>>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let (a, probs) = self
            .attn
            .forward(self.ln_1.forward(x.clone()), cache, want_probs);
        let x = x + a; // [b, t, n_embd]
        let x = x.clone() + self.mlp.forward(self.ln_2.forward(x)); // [b, t, n_embd]
        (x, probs)
    }
}

/// GPT-2: token and position embeddings, `n_layer` blocks, a final LayerNorm, and an LM
/// head tied to the token embedding.
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    /// Token embedding `[vocab_size, n_embd]`; also the LM head when tied.
    pub wte: Embedding<B>,
    /// Position embedding `[n_positions, n_embd]`.
    pub wpe: Embedding<B>,
    pub drop: Dropout,
    pub h: Vec<Block<B>>,
    pub ln_f: LayerNorm<B>,
    /// An untied LM head `[n_embd, vocab_size]`, no bias; `None` when tied to `wte`.
    pub lm_head: Option<Proj<B>>,
    /// The shape this model was built with (not a parameter: it is not in the weights).
    pub config: Gpt2Config,
}

/// What a forward pass returns besides the logits.
#[derive(Debug)]
pub struct ForwardOutput<B: Backend> {
    /// `[batch, seq, vocab_size]`, or `[batch, 1, vocab_size]` for the last position only.
    pub logits: Tensor<B, 3>,
    /// Per layer, `[batch, n_head, seq, seq_total]`, when asked for.
    pub attentions: Vec<Tensor<B, 4>>,
}

/// Options of [`Gpt::forward_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Also return every layer's attention probabilities (slower: no fused kernel).
    pub attentions: bool,
    /// Compute logits only for the last position (generation).
    pub last_only: bool,
}

/// How a freshly built model's weights are filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Drawn now, not lazily at first use (Burn's `Initializer` is lazy), so the weights
    /// depend only on the RNG state at `init`: `B::seed(..); config.init(..)` is
    /// reproducible whatever runs in between.
    Random,
    /// Never drawn: placeholders (zeros if read) for a loader to replace, so loading a
    /// model neither spends time on random numbers nor holds a second copy of the weights.
    Lazy,
}

impl Fill {
    /// A `shape` parameter N(0, std) or, lazily, a placeholder.
    pub(crate) fn normal<B: Backend, const D: usize>(
        self,
        shape: [usize; D],
        std: f64,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        match self {
            Fill::Random => Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, std),
                device,
            )),
            Fill::Lazy => Param::uninitialized(
                ParamId::new(),
                move |device, require_grad| {
                    Tensor::zeros(shape, device).set_require_grad(require_grad)
                },
                device.clone(),
                true,
                shape.into(),
            ),
        }
    }
}

impl Gpt2Config {
    /// A GPT-2 with GPT-2's initialisation: weights and embeddings N(0, 0.02), the two
    /// residual projections of each block N(0, 0.02/√(2·n_layer)), biases 0, LayerNorms 1/0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Gpt<B>> {
        self.build(Fill::Random, device)
    }

    /// A GPT-2 of this shape whose weights are placeholders, never drawn: what a loader
    /// fills (the weights are only materialised, as zeros, if read before being replaced).
    pub fn init_for_load<B: Backend>(&self, device: &B::Device) -> Result<Gpt<B>> {
        self.build(Fill::Lazy, device)
    }

    fn build<B: Backend>(&self, fill: Fill, device: &B::Device) -> Result<Gpt<B>> {
        self.validate()?;
        let (e, i) = (self.n_embd, self.inner_dim());
        let std = 0.02;
        let proj_std = std / (2.0 * self.n_layer as f64).sqrt();
        let ln = || {
            LayerNormConfig::new(e)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let block = || Block {
            ln_1: ln(),
            attn: Attention {
                c_attn: Proj::init_with(e, 3 * e, std, self.qkv_bias, fill, device),
                c_proj: Proj::init_with(e, e, proj_std, true, fill, device),
                attn_dropout: DropoutConfig::new(self.attn_pdrop).init(),
                resid_dropout: DropoutConfig::new(self.resid_pdrop).init(),
                n_head: self.n_head,
            },
            ln_2: ln(),
            mlp: Mlp {
                c_fc: Proj::init_with(e, i, std, true, fill, device),
                c_proj: Proj::init_with(i, e, proj_std, true, fill, device),
                dropout: DropoutConfig::new(self.resid_pdrop).init(),
            },
        };
        Ok(Gpt {
            wte: Embedding {
                weight: fill.normal([self.vocab_size, e], std, device),
            },
            wpe: Embedding {
                weight: fill.normal([self.n_positions, e], std, device),
            },
            drop: DropoutConfig::new(self.embd_pdrop).init(),
            h: (0..self.n_layer).map(|_| block()).collect(),
            ln_f: ln(),
            lm_head: (!self.tie_word_embeddings)
                .then(|| Proj::init_with(e, self.vocab_size, std, false, fill, device)),
            config: self.clone(),
        })
    }
}

impl<B: Backend> Gpt<B> {
    /// The shape this model was built with.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.dims()[0]
    }

    /// The context length, `n_positions`.
    pub fn n_positions(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    /// Number of blocks.
    pub fn n_layer(&self) -> usize {
        self.h.len()
    }

    /// The first parameter holding NaN or infinity, by its path (`h.0.attn.c_attn.weight`).
    pub fn first_non_finite(&self) -> Option<String> {
        let mut finder = NonFiniteFinder {
            path: Vec::new(),
            found: None,
        };
        self.visit(&mut finder);
        finder.found
    }

    /// An error naming the first parameter that holds NaN or infinity, if one does.
    pub fn check_finite(&self) -> Result<()> {
        match self.first_non_finite() {
            None => Ok(()),
            Some(tensor) => Err(ModelError::NonFinite { path: None, tensor }),
        }
    }

    /// An empty KV cache sized for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.n_layer(), self.n_positions())
    }

    /// Logits for every position: `[batch, seq]` ids → `[batch, seq, vocab_size]`.
    ///
    /// # Panics
    /// If `seq > n_positions` or an id is out of range; use [`Self::tokens`] and
    /// [`Self::forward_with`] to get errors instead.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        assert!(
            t <= self.n_positions(),
            "sequence of {t} tokens exceeds n_positions = {}",
            self.n_positions()
        );
        self.run(ids, None, ForwardOptions::default()).logits
    }

    /// A forward pass with options, reading and extending `cache` if given.
    pub fn forward_with(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        options: ForwardOptions,
    ) -> Result<ForwardOutput<B>> {
        let [_, t] = ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        if t == 0 {
            return Err(ModelError::Input("no tokens to run".into()));
        }
        if past + t > self.n_positions() {
            return Err(ModelError::ContextOverflow {
                len: past + t,
                n_positions: self.n_positions(),
            });
        }
        Ok(self.run(ids, cache, options))
    }

    /// Logits and every layer's attention probabilities `[batch, n_head, seq, seq]`.
    pub fn forward_with_attention(&self, ids: Tensor<B, 2, Int>) -> Result<ForwardOutput<B>> {
        self.forward_with(
            ids,
            None,
            ForwardOptions {
                attentions: true,
                last_only: false,
            },
        )
    }

    /// The final hidden states, after `ln_f` and before the LM head: `[batch, seq]` ids →
    /// `[batch, seq, n_embd]`. Another head (a classifier) sits on these.
    ///
    /// # Panics
    /// As [`Self::forward`].
    pub fn forward_hidden(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        assert!(
            t <= self.n_positions(),
            "sequence of {t} tokens exceeds n_positions = {}",
            self.n_positions()
        );
        let (x, _) = self.body(ids, None, false);
        self.ln_f.forward(x) // [b, t, n_embd]
    }

    fn run(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        options: ForwardOptions,
    ) -> ForwardOutput<B> {
        let [b, t] = ids.dims();
        let (x, attentions) = self.body(ids, cache, options.attentions); // [b, t, n_embd]
        let x = if options.last_only {
            x.narrow(1, t - 1, 1)
        } else {
            x
        }; // [b, t', n_embd]
        let x = self.ln_f.forward(x);
        ForwardOutput {
            logits: self.lm_head(x, b),
            attentions,
        }
    }

    /// Embeddings, then every block: the residual stream before `ln_f`, `[b, t, n_embd]`.
    fn body(
        &self,
        ids: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 4>>) {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len());

        let pos =
            Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device).unsqueeze::<2>(); // [1, t]
        let x = self.wte.forward(ids) + self.wpe.forward(pos); // [b, t, n_embd]
        let mut x = self.drop.forward(x);

        let mut attentions = Vec::new();
        for (i, block) in self.h.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c.layers[i]);
            let (y, probs) = block.forward(x, layer_cache, want_probs);
            x = y;
            attentions.extend(probs);
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        (x, attentions)
    }

    /// `[b, t, n_embd]` → `[b, t, vocab_size]`: `x · wteᵀ`, or the untied head.
    fn lm_head(&self, x: Tensor<B, 3>, b: usize) -> Tensor<B, 3> {
        if let Some(head) = &self.lm_head {
            return head.forward(x);
        }
        let [_, t, e] = x.dims();
        let w = self.wte.weight.val(); // [vocab, n_embd]
        let v = w.dims()[0];
        x.reshape([b * t, e])
            .matmul(w.transpose()) // [b·t, vocab]
            .reshape([b, t, v])
    }

    /// Adds a fresh LoRA adapter to every projection that `lora.targets` names, in every
    /// block. The weights are unchanged, so the model computes exactly what it did.
    pub fn with_lora(mut self, lora: &LoraConfig, device: &B::Device) -> Result<Self> {
        lora.validate()?;
        let (rank, scale) = (lora.rank, lora.scale());
        let on = |name: &str| lora.targets.iter().any(|t| t == name);
        for block in &mut self.h {
            let adapt = |p: Proj<B>, name: &str| match on(name) {
                true => p.with_lora(rank, scale, device),
                false => p,
            };
            let attn = &mut block.attn;
            attn.c_attn = adapt(attn.c_attn.clone(), "c_attn");
            attn.c_proj = adapt(attn.c_proj.clone(), "c_proj");
            let mlp = &mut block.mlp;
            mlp.c_fc = adapt(mlp.c_fc.clone(), "c_fc");
            mlp.c_proj = adapt(mlp.c_proj.clone(), "c_proj");
        }
        Ok(self)
    }

    /// Sets every dropout probability (fine-tuning often turns dropout off).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.config = self.config.clone().with_dropout(p);
        self.drop.prob = p;
        for block in &mut self.h {
            block.attn.attn_dropout.prob = p;
            block.attn.resid_dropout.prob = p;
            block.mlp.dropout.prob = p;
        }
        self
    }

    /// Whether any projection carries a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.h.iter().any(|b| {
            [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj]
                .iter()
                .any(|p| p.lora.is_some())
        })
    }

    /// Folds every adapter into its weight: a plain GPT-2 that computes the same logits.
    pub fn merge_lora(mut self) -> Self {
        for block in &mut self.h {
            let attn = &mut block.attn;
            attn.c_attn = attn.c_attn.clone().merged();
            attn.c_proj = attn.c_proj.clone().merged();
            let mlp = &mut block.mlp;
            mlp.c_fc = mlp.c_fc.clone().merged();
            mlp.c_proj = mlp.c_proj.clone().merged();
        }
        self
    }

    /// Builds an id tensor `[batch, seq]` from rows of ids, checking that every id is in the
    /// vocabulary, that rows have equal length, and that they fit the context.
    pub fn tokens(&self, rows: &[&[u32]], device: &B::Device) -> Result<Tensor<B, 2, Int>> {
        let t = rows.first().map_or(0, |r| r.len());
        if rows.is_empty() || t == 0 {
            return Err(ModelError::Input("no tokens".into()));
        }
        if let Some(r) = rows.iter().find(|r| r.len() != t) {
            return Err(ModelError::Input(format!(
                "rows of a batch must have equal length ({t} and {})",
                r.len()
            )));
        }
        if t > self.n_positions() {
            return Err(ModelError::ContextOverflow {
                len: t,
                n_positions: self.n_positions(),
            });
        }
        let vocab = self.vocab_size();
        let mut flat = Vec::with_capacity(rows.len() * t);
        for &id in rows.iter().flat_map(|r| r.iter()) {
            if id as usize >= vocab {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab_size: vocab,
                });
            }
            flat.push(id as i64);
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [rows.len(), t]),
            device,
        ))
    }
}

/// Walks the parameters, remembering the path of the first one that is not finite.
struct NonFiniteFinder {
    path: Vec<String>,
    found: Option<String>,
}

impl<B: Backend> ModuleVisitor<B> for NonFiniteFinder {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.found.is_some() {
            return;
        }
        let t = param.val();
        // A sum is finite when every element is (NaN and ±∞ propagate): no copy of the
        // tensor. Only a non-finite sum is checked exactly, since finite values can overflow
        // it: x − x is 0 for every finite x and NaN for NaN and ±∞.
        let sum: f64 = t.clone().sum().into_scalar().elem();
        if sum.is_finite() {
            return;
        }
        let probe: f64 = (t.clone() - t).sum().into_scalar().elem();
        if probe != 0.0 {
            self.found = Some(self.path.join("."));
        }
    }
}
