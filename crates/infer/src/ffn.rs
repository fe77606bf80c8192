//! A block's feed-forward part for generation: GPT-2's GELU MLP, Llama's SwiGLU, or a
//! Mixtral-style mixture of experts, on the engine's `[out, in]` projections.
//!
//! ```text
//! gelu:    x ─▶ c_fc ─▶ GELU (tanh) ─▶ c_proj
//! swiglu:  x ─▶ c_fc ─▶ [gate | up] ─▶ SiLU(gate) ⊙ up ─▶ c_proj
//! moe:     x ─▶ router ─▶ top-k of softmax, renormalised ─▶ Σ w_j · experts[j](x)
//! ```

use burn::tensor::activation::silu;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, TensorPrimitive};
use llm_model::{KernelBackend, Mlp, Moe};

use crate::model::{Linear, Quant};

/// GPT-2's tanh GELU through the backend's fused op.
fn gelu<B: KernelBackend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(B::gelu_tanh(
        x.into_primitive().tensor(),
    )))
}

/// A dense MLP: GELU, or SwiGLU when `gated`.
#[derive(Clone, Debug)]
pub struct InferMlp<B: KernelBackend> {
    /// `[inner, n_embd]`, or `[2·inner, n_embd]` (gate, then up) when gated.
    pub c_fc: Linear<B>,
    /// `[n_embd, inner]`.
    pub c_proj: Linear<B>,
    pub gated: bool,
}

impl<B: KernelBackend> InferMlp<B> {
    pub(crate) fn from_mlp(mlp: Mlp<B>, quant: Quant) -> Self {
        InferMlp {
            c_fc: Linear::from_proj(mlp.c_fc, quant),
            c_proj: Linear::from_proj(mlp.c_proj, quant),
            gated: mlp.gated,
        }
    }

    /// `[m, n_embd]` → `[m, n_embd]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.c_fc.forward(x); // [m, inner] or [m, 2·inner]
        let x = if self.gated {
            let i = x.dims()[1] / 2;
            silu(x.clone().narrow(1, 0, i)) * x.narrow(1, i, i) // [m, inner]
        } else {
            gelu(x)
        };
        self.c_proj.forward(x) // [m, n_embd]
    }
}

/// A sparse mixture of experts: each token through its `n_active` best experts.
#[derive(Clone, Debug)]
pub struct InferMoe<B: KernelBackend> {
    /// `[n_expert, n_embd]`.
    pub router: Linear<B>,
    pub experts: Vec<InferMlp<B>>,
    pub n_active: usize,
}

impl<B: KernelBackend> InferMoe<B> {
    pub(crate) fn from_moe(moe: Moe<B>, quant: Quant) -> Self {
        InferMoe {
            router: Linear::from_proj(moe.router, quant),
            experts: (moe.experts.into_iter())
                .map(|e| InferMlp::from_mlp(e, quant))
                .collect(),
            n_active: moe.n_active,
        }
    }

    /// `[m, n_embd]` → `[m, n_embd]`: only the chosen experts run, each on its tokens.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [m, c] = x.dims();
        let device = x.device();
        let logits: Vec<f32> = (self.router.forward(x.clone()).into_data()) // [m, E]
            .convert::<f32>()
            .into_vec()
            .expect("f32 router logits");
        let routes = route(&logits, self.experts.len(), self.n_active);
        let mut y = Tensor::<B, 2>::zeros([m, c], &device);
        for (expert, (tokens, weights)) in self.experts.iter().zip(routes) {
            if tokens.is_empty() {
                continue;
            }
            let n = tokens.len();
            let tokens = Tensor::<B, 1, Int>::from_data(TensorData::new(tokens, [n]), &device);
            let w = Tensor::<B, 2>::from_data(TensorData::new(weights, [n, 1]), &device);
            let out = expert.forward(x.clone().select(0, tokens.clone())); // [n, c]
            y = y.select_assign(0, tokens, out * w, IndexingUpdateOp::Add); // [m, c]
        }
        y
    }
}

/// For each expert, the tokens routed to it and their weights: each token's `k` most
/// probable experts under `softmax(logits [m, E])`, weighted by their probabilities
/// renormalised to sum to 1 (Mixtral's rule, as [`llm_model::Moe`] routes).
fn route(logits: &[f32], n_expert: usize, k: usize) -> Vec<(Vec<i64>, Vec<f32>)> {
    let mut routes = vec![(Vec::new(), Vec::new()); n_expert];
    for (token, row) in logits.chunks_exact(n_expert).enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let probs: Vec<f32> = row.iter().map(|&l| (l - max).exp()).collect();
        let mut order: Vec<usize> = (0..n_expert).collect();
        // Highest first; ties to the lower index, as a stable sort keeps them.
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let total: f32 = order[..k].iter().map(|&j| probs[j]).sum();
        for &j in &order[..k] {
            routes[j].0.push(token as i64);
            routes[j].1.push(probs[j] / total);
        }
    }
    routes
}

/// A block's feed-forward part.
#[derive(Clone, Debug)]
pub enum FeedForward<B: KernelBackend> {
    Mlp(InferMlp<B>),
    Moe(InferMoe<B>),
}

impl<B: KernelBackend> FeedForward<B> {
    /// `[m, n_embd]` → `[m, n_embd]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            FeedForward::Mlp(mlp) => mlp.forward(x),
            FeedForward::Moe(moe) => moe.forward(x),
        }
    }

    /// The dense MLP, if this is one.
    pub fn dense(&self) -> Option<&InferMlp<B>> {
        match self {
            FeedForward::Mlp(mlp) => Some(mlp),
            FeedForward::Moe(_) => None,
        }
    }

    /// Every projection.
    pub fn linears(&self) -> Vec<&Linear<B>> {
        match self {
            FeedForward::Mlp(mlp) => vec![&mlp.c_fc, &mlp.c_proj],
            FeedForward::Moe(moe) => std::iter::once(&moe.router)
                .chain(moe.experts.iter().flat_map(|e| [&e.c_fc, &e.c_proj]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routing_takes_the_top_k_renormalised() {
        // Token 0 prefers experts 2 then 0; token 1 prefers 1 then 2.
        let logits = [1.0, -1.0, 2.0, 0.0, 3.0, 2.0];
        let routes = route(&logits, 3, 2);
        assert_eq!(routes[0].0, vec![0]);
        assert_eq!(routes[1].0, vec![1]);
        assert_eq!(routes[2].0, vec![0, 1]);
        let (e1, e2) = (1f32.exp(), 2f32.exp());
        assert!((routes[2].1[0] - e2 / (e1 + e2)).abs() < 1e-6);
        assert!((routes[0].1[0] - e1 / (e1 + e2)).abs() < 1e-6);
        for token in 0..2 {
            let total: f32 = (routes.iter())
                .flat_map(|(t, w)| t.iter().zip(w).filter(|(&t, _)| t == token))
                .map(|(_, w)| w)
                .sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
    }
}
