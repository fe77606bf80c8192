//! GPT-2, module by module, named as in OpenAI's checkpoint, and the variants that make the
//! same skeleton a Llama or a Mixtral (see [`Gpt2Config`]).
//!
//! ```text
//! ids ─▶ wte ─┐
//!             ├─▶ + ─▶ drop ─▶ h[0] ─▶ … ─▶ h[n_layer-1] ─▶ ln_f ─▶ · wteᵀ ─▶ logits
//! pos ─▶ wpe ─┘                                                    (or lm_head)
//!
//! h[i]:  x ─▶ x + attn(ln_1(x)) ─▶ x + mlp(ln_2(x))        (pre-norm, residual)
//! ```
//!
//! | part | GPT-2 | variants |
//! |---|---|---|
//! | positions | `wpe` | RoPE inside `attn` ([`Rope`]), or none |
//! | `ln_*` | LayerNorm | RMSNorm ([`Norm`]) |
//! | `attn` | multi-head, causal | grouped-query, sliding window ([`Attention`]) |
//! | `mlp` | GELU ([`Mlp`]) | SwiGLU, or a mixture of SwiGLU experts in `moe` ([`Moe`]) |

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};

use crate::attention::Attention;
use crate::cache::{KvCache, LayerCache};
use crate::config::{Gpt2Config, MlpKind, Position};
use crate::dropout::dropout;
use crate::error::{ModelError, Result};
use crate::kernels::KernelBackend;
use crate::mlp::Mlp;
use crate::moe::{load_balancing_loss, Moe};
use crate::norm::Norm;
use crate::proj::{LoraConfig, Proj};
use crate::rope::Rope;

/// One transformer block, `h[i]`: pre-norm attention and feed-forward, each added to the
/// residual stream. The feed-forward is `mlp`, or `moe` for a mixture of experts.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln_1: Norm<B>,
    pub attn: Attention<B>,
    pub ln_2: Norm<B>,
    pub mlp: Option<Mlp<B>>,
    pub moe: Option<Moe<B>>,
}

/// What a block returns: the residual stream `[b, t, n_embd]`, the attention probabilities
/// if asked for, and the router logits of a mixture of experts.
pub(crate) type BlockOutput<B> = (Tensor<B, 3>, Option<Tensor<B, 4>>, Option<Tensor<B, 2>>);

impl<B: KernelBackend> Block<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
        cache: Option<&mut LayerCache<B>>,
        want_probs: bool,
    ) -> BlockOutput<B> {
        let (a, probs) = self
            .attn
            .forward(self.ln_1.forward(x.clone()), rope, cache, want_probs);
        let x = x + a; // [b, t, n_embd]
        let (m, router_logits) = self.feed_forward(self.ln_2.forward(x.clone()));
        (x + m, probs, router_logits) // [b, t, n_embd]
    }

    fn feed_forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<Tensor<B, 2>>) {
        match (&self.mlp, &self.moe) {
            (Some(mlp), _) => (mlp.forward(x), None),
            (None, Some(moe)) => {
                let (y, logits) = moe.forward(x);
                (y, Some(logits))
            }
            (None, None) => unreachable!("a block has an mlp or a moe"),
        }
    }
}

impl<B: Backend> Block<B> {
    /// Every projection with its LoRA target name (`c_attn`, `c_proj`, `c_fc`), the
    /// experts' included.
    fn projs(&self) -> Vec<(&'static str, &Proj<B>)> {
        let mut out = vec![("c_attn", &self.attn.c_attn), ("c_proj", &self.attn.c_proj)];
        for mlp in self
            .mlp
            .iter()
            .chain(self.moe.iter().flat_map(|m| &m.experts))
        {
            out.extend([("c_fc", &mlp.c_fc), ("c_proj", &mlp.c_proj)]);
        }
        out
    }

    /// Replaces every projection `p` named `name` by `f(name, p)`.
    fn map_projs(mut self, f: &impl Fn(&str, Proj<B>) -> Proj<B>) -> Self {
        let attn = &mut self.attn;
        attn.c_attn = f("c_attn", attn.c_attn.clone());
        attn.c_proj = f("c_proj", attn.c_proj.clone());
        let mlps = self
            .mlp
            .iter_mut()
            .chain(self.moe.iter_mut().flat_map(|m| m.experts.iter_mut()));
        for mlp in mlps {
            mlp.c_fc = f("c_fc", mlp.c_fc.clone());
            mlp.c_proj = f("c_proj", mlp.c_proj.clone());
        }
        self
    }
}

/// GPT-2: token and position embeddings, `n_layer` blocks, a final norm, and an LM head
/// tied to the token embedding; or a variant of it ([`Gpt2Config`]).
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    /// Token embedding `[vocab_size, n_embd]`; also the LM head when tied.
    pub wte: Embedding<B>,
    /// Position embedding `[n_positions, n_embd]`; `None` with RoPE or no positions.
    pub wpe: Option<Embedding<B>>,
    pub drop: Dropout,
    pub h: Vec<Block<B>>,
    pub ln_f: Norm<B>,
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
    /// Per mixture-of-experts layer, the router logits `[batch·seq, n_expert]`.
    pub router_logits: Vec<Tensor<B, 2>>,
}

/// What the embeddings and blocks make: the residual stream before `ln_f`, and what the
/// forward pass collects on the way.
struct Body<B: Backend> {
    x: Tensor<B, 3>,
    attentions: Vec<Tensor<B, 4>>,
    router_logits: Vec<Tensor<B, 2>>,
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
    /// residual projections of each block N(0, 0.02/√(2·n_layer)), biases 0, norms 1/0.
    /// Variants are initialised the same way (each expert as an MLP).
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
        let (e, std) = (self.n_embd, 0.02);
        let positions = (self.position == Position::Learned).then(|| Embedding {
            weight: fill.normal([self.n_positions, e], std, device),
        });
        Ok(Gpt {
            wte: Embedding {
                weight: fill.normal([self.vocab_size, e], std, device),
            },
            wpe: positions,
            drop: DropoutConfig::new(self.embd_pdrop).init(),
            h: (0..self.n_layer)
                .map(|_| self.build_block(fill, device))
                .collect(),
            ln_f: self.norm(device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| Proj::init_with(e, self.vocab_size, std, false, fill, device)),
            config: self.clone(),
        })
    }

    fn norm<B: Backend>(&self, device: &B::Device) -> Norm<B> {
        Norm::new(self.norm, self.n_embd, self.layer_norm_epsilon, device)
    }

    /// The std of the projections that write into the residual stream.
    fn residual_std(&self) -> f64 {
        0.02 / (2.0 * self.n_layer as f64).sqrt()
    }

    fn build_block<B: Backend>(&self, fill: Fill, device: &B::Device) -> Block<B> {
        let e = self.n_embd;
        let (mlp, moe) = match self.mlp {
            MlpKind::Moe => (None, Some(self.build_moe(fill, device))),
            _ => (Some(self.build_mlp(self.resid_pdrop, fill, device)), None),
        };
        Block {
            ln_1: self.norm(device),
            attn: Attention {
                c_attn: Proj::init_with(e, self.qkv_dim(), 0.02, self.attn_bias(), fill, device),
                c_proj: Proj::init_with(e, e, self.residual_std(), self.bias, fill, device),
                attn_dropout: DropoutConfig::new(self.attn_pdrop).init(),
                resid_dropout: DropoutConfig::new(self.resid_pdrop).init(),
                n_head: self.n_head,
                n_kv_head: self.kv_heads(),
                window: self.attention_window,
            },
            ln_2: self.norm(device),
            mlp,
            moe,
        }
    }

    fn build_mlp<B: Backend>(&self, dropout: f64, fill: Fill, device: &B::Device) -> Mlp<B> {
        let (e, i) = (self.n_embd, self.inner_dim());
        let gated = self.mlp != MlpKind::Gelu;
        let fc_width = if gated { 2 * i } else { i };
        Mlp {
            c_fc: Proj::init_with(e, fc_width, 0.02, self.bias, fill, device),
            c_proj: Proj::init_with(i, e, self.residual_std(), self.bias, fill, device),
            dropout: DropoutConfig::new(dropout).init(),
            gated,
        }
    }

    fn build_moe<B: Backend>(&self, fill: Fill, device: &B::Device) -> Moe<B> {
        Moe {
            router: Proj::init_with(self.n_embd, self.n_expert, 0.02, false, fill, device),
            experts: (0..self.n_expert)
                .map(|_| self.build_mlp(0.0, fill, device))
                .collect(),
            dropout: DropoutConfig::new(self.resid_pdrop).init(),
            n_active: self.n_expert_active,
        }
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
        self.config.n_positions
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
}
impl<B: KernelBackend> Gpt<B> {
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
        self.forward_hidden_routed(ids).0
    }

    /// [`Self::forward_hidden`] and every mixture-of-experts layer's router logits
    /// `[batch·seq, n_expert]` (none for other models), for [`Self::router_aux_loss`].
    ///
    /// # Panics
    /// As [`Self::forward`].
    pub fn forward_hidden_routed(
        &self,
        ids: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 2>>) {
        let [_, t] = ids.dims();
        assert!(
            t <= self.n_positions(),
            "sequence of {t} tokens exceeds n_positions = {}",
            self.n_positions()
        );
        let body = self.body(ids, None, false);
        (self.ln_f.forward(body.x), body.router_logits) // [b, t, n_embd]
    }

    /// The load-balancing loss of a mixture of experts over the router logits of one forward
    /// pass (see [`load_balancing_loss`]), `[1]`; `None` when there are none.
    pub fn router_aux_loss(&self, router_logits: &[Tensor<B, 2>]) -> Option<Tensor<B, 1>> {
        (!router_logits.is_empty())
            .then(|| load_balancing_loss(router_logits, self.config.n_expert_active))
    }

    fn run(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        options: ForwardOptions,
    ) -> ForwardOutput<B> {
        let [b, t] = ids.dims();
        let body = self.body(ids, cache, options.attentions);
        let x = body.x; // [b, t, n_embd]
        let x = if options.last_only {
            x.narrow(1, t - 1, 1)
        } else {
            x
        }; // [b, t', n_embd]
        let x = self.ln_f.forward(x);
        ForwardOutput {
            logits: self.lm_head(x, b),
            attentions: body.attentions,
            router_logits: body.router_logits,
        }
    }

    /// Embeddings, then every block: the residual stream before `ln_f`, `[b, t, n_embd]`.
    fn body(
        &self,
        ids: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        want_probs: bool,
    ) -> Body<B> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len());

        let mut x = self.wte.forward(ids); // [b, t, n_embd]
        if let Some(wpe) = &self.wpe {
            let pos = Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device)
                .unsqueeze::<2>(); // [1, t]
            x = x + wpe.forward(pos);
        }
        let rope = (self.config.position == Position::Rope).then(|| {
            let c = &self.config;
            Rope::new(c.rope_theta, c.head_dim(), past..past + t, &device)
        });
        let mut body = Body {
            x: dropout(&self.drop, x),
            attentions: Vec::new(),
            router_logits: Vec::new(),
        };
        for (i, block) in self.h.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c.layers[i]);
            let (y, probs, router) = block.forward(body.x, rope.as_ref(), layer_cache, want_probs);
            body.x = y;
            body.attentions.extend(probs);
            body.router_logits.extend(router);
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        body
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
}
impl<B: Backend> Gpt<B> {
    /// Adds a fresh LoRA adapter to every projection that `lora.targets` names, in every
    /// block (every expert's too). The weights are unchanged, so the model computes exactly
    /// what it did.
    pub fn with_lora(mut self, lora: &LoraConfig, device: &B::Device) -> Result<Self> {
        lora.validate()?;
        let (rank, scale) = (lora.rank, lora.scale());
        let adapt = |name: &str, p: Proj<B>| match lora.targets.iter().any(|t| t == name) {
            true => p.with_lora(rank, scale, device),
            false => p,
        };
        self.h = self.h.into_iter().map(|b| b.map_projs(&adapt)).collect();
        Ok(self)
    }

    /// Sets every dropout probability (fine-tuning often turns dropout off).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.config = self.config.clone().with_dropout(p);
        self.drop.prob = p;
        for block in &mut self.h {
            block.attn.attn_dropout.prob = p;
            block.attn.resid_dropout.prob = p;
            if let Some(mlp) = &mut block.mlp {
                mlp.dropout.prob = p;
            }
            if let Some(moe) = &mut block.moe {
                moe.dropout.prob = p;
            }
        }
        self
    }

    /// Whether any projection carries a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.h
            .iter()
            .any(|b| b.projs().iter().any(|(_, p)| p.lora.is_some()))
    }

    /// Folds every adapter into its weight: a plain model that computes the same logits.
    pub fn merge_lora(mut self) -> Self {
        let merge = |_: &str, p: Proj<B>| p.merged();
        self.h = self.h.into_iter().map(|b| b.map_projs(&merge)).collect();
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
