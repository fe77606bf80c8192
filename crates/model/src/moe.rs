//! A sparse mixture of experts (Mixtral's `block_sparse_moe`): a router scores every expert
//! for each token, the token goes through its `n_expert_active` best experts, and their
//! outputs are summed, weighted by the router's renormalised probabilities.
//!
//! ```text
//! x ─▶ router ─▶ softmax ─▶ top-k ─▶ weights / Σ weights ─┐
//! x ─▶ experts[j] for each chosen j (SwiGLU) ─────────────┴─▶ Σ w_j · expert_j(x) ─▶ dropout
//! ```
//!
//! Only the chosen experts run: each expert gathers its tokens, and its outputs are added
//! back in place. The load-balancing loss ([`load_balancing_loss`]) keeps the router from
//! sending everything to a few experts.

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::dropout::dropout;
use crate::kernels::KernelBackend;
use crate::mlp::Mlp;
use crate::proj::Proj;

/// `moe`: a router and `n_expert` SwiGLU experts.
#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// `[n_embd, n_expert]`, no bias: each token's score for each expert (Mixtral's `gate`).
    pub router: Proj<B>,
    /// SwiGLU MLPs (their own dropout is off; `dropout` acts on the sum).
    pub experts: Vec<Mlp<B>>,
    pub dropout: Dropout,
    /// How many experts each token uses.
    #[module(skip)]
    pub n_active: usize,
}

impl<B: KernelBackend> Moe<B> {
    /// `[b, t, n_embd]` → the output `[b, t, n_embd]` and the router logits
    /// `[b·t, n_expert]` (for the load-balancing loss).
    pub fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let [b, t, e] = x.dims();
        let (n, k) = (b * t, self.n_active);
        let logits = self
            .router
            .forward(x.clone())
            .reshape([n, self.experts.len()]); // [n, E]
        let (weights, chosen) = softmax(logits.clone(), 1).topk_with_indices(k, 1); // [n, k]
        let weights = weights.clone() / weights.sum_dim(1); // [n, k], rows sum to 1
        let weights = weights.reshape([n * k]); // slot s of token r at r·k + s

        let x = x.reshape([n, e]); // [n, e]
        let chosen: Vec<i64> = chosen
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("i64 ids");
        let mut y = Tensor::<B, 2>::zeros([n, e], &x.device());
        for (j, expert) in self.experts.iter().enumerate() {
            let slots: Vec<i64> = (0..chosen.len() as i64)
                .filter(|&s| chosen[s as usize] == j as i64)
                .collect();
            if slots.is_empty() {
                continue;
            }
            let m = slots.len();
            let tokens: Vec<i64> = slots.iter().map(|s| s / k as i64).collect();
            let ids =
                |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [m]), &x.device());
            let (tokens, slots) = (ids(tokens), ids(slots));
            let xs = x.clone().select(0, tokens.clone()).reshape([1, m, e]); // [1, m, e]
            let out = expert.forward(xs).reshape([m, e]); // [m, e]
            let w = weights.clone().select(0, slots).reshape([m, 1]); // [m, 1]
            y = y.select_assign(0, tokens, out * w, IndexingUpdateOp::Add); // [n, e]
        }
        (dropout(&self.dropout, y.reshape([b, t, e])), logits)
    }
}

/// The Switch Transformer / Mixtral load-balancing loss over every MoE layer's router
/// logits (`[tokens, n_expert]` each), as transformers' `load_balancing_loss_func`:
/// `n_expert · Σ_j f_j · P_j`, where `f_j` is the share of routing slots that went to
/// expert `j` (summing to `k`) and `P_j` its mean router probability, over all layers' tokens
/// together. It is `k` when the load is even; the gradient flows through `P` only.
pub fn load_balancing_loss<B: Backend>(router_logits: &[Tensor<B, 2>], k: usize) -> Tensor<B, 1> {
    let logits = Tensor::cat(router_logits.to_vec(), 0); // [L·n, E]
    let [n, n_expert] = logits.dims();
    let probs = softmax(logits, 1); // [L·n, E]
    let chosen = probs.clone().topk_with_indices(k, 1).1;
    let chosen: Vec<i64> = chosen
        .into_data()
        .convert::<i64>()
        .into_vec()
        .expect("i64 ids");
    let mut share = vec![0f32; n_expert];
    for j in chosen {
        share[j as usize] += 1.0 / n as f32;
    }
    let share = Tensor::<B, 1>::from_data(TensorData::new(share, [n_expert]), &probs.device());
    let mean_prob = probs.mean_dim(0).reshape([n_expert]); // [E]
    (share * mean_prob).sum() * n_expert as f64
}
