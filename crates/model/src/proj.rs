//! [`Proj`]: GPT-2's projection `y = x·W + b` (HF `Conv1D`), which can carry a LoRA
//! adapter.
//!
//! ```text
//! x ─▶ x·W + b ───────────────┐
//!  └─▶ x·A ─▶ ·B ─▶ × α/r ────┴─▶ + ─▶ y        (the adapter, when there is one)
//! ```
//!
//! `W` keeps its name and layout (`c_attn.weight`), so weight loading and export never see
//! the adapter; [`Gpt::with_lora`](crate::Gpt::with_lora) adds adapters to a loaded model
//! and [`Gpt::merge_lora`](crate::Gpt::merge_lora) folds them back into `W`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::model::Fill;

/// The projections an adapter can sit on, by their GPT-2 names (`c_proj` is both the
/// attention's and the MLP's output projection, as in PEFT's `target_modules`).
pub const LORA_TARGETS: [&str; 3] = ["c_attn", "c_proj", "c_fc"];

/// A low-rank adapter: `ΔW = A·B · alpha/rank`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[d_in, rank]`, Kaiming-uniform (PyTorch's `kaiming_uniform_(a=√5)`: U(±1/√d_in)).
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, d_out]`, zeros: a fresh adapter changes nothing.
    pub b: Param<Tensor<B, 2>>,
    /// `alpha / rank`.
    pub scale: f64,
}

/// How to adapt a model: the rank, the scale numerator and which projections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    /// The adapter's output is scaled by `alpha / rank`; defaults to `rank` (scale 1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Projection names from [`LORA_TARGETS`].
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

fn default_targets() -> Vec<String> {
    LORA_TARGETS.iter().map(|s| s.to_string()).collect()
}

impl LoraConfig {
    /// Rank `rank`, scale numerator `alpha` (default `rank`), the default targets.
    pub fn new(rank: usize, alpha: Option<f64>) -> Self {
        LoraConfig {
            rank,
            alpha,
            targets: default_targets(),
        }
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64) / self.rank as f64
    }

    /// Checks the rank, alpha and targets; an error names the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(ModelError::Config("lora.rank must be at least 1".into()));
        }
        if let Some(a) = self.alpha.filter(|a| !(a.is_finite() && *a > 0.0)) {
            return Err(ModelError::Config(format!(
                "lora.alpha must be a positive number, got {a}"
            )));
        }
        if self.targets.is_empty() {
            return Err(ModelError::Config("lora.targets is empty".into()));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| !LORA_TARGETS.contains(&t.as_str()))
        {
            return Err(ModelError::Config(format!(
                "unknown lora target {t:?} (targets: {})",
                LORA_TARGETS.join(", ")
            )));
        }
        Ok(())
    }
}

/// A projection `x·W + b`, with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct Proj<B: Backend> {
    /// `[d_in, d_out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> Proj<B> {
    /// `[d_in, d_out]` weights N(0, std), a zero bias if `bias`.
    pub fn init(d_in: usize, d_out: usize, std: f64, bias: bool, device: &B::Device) -> Self {
        Self::init_with(d_in, d_out, std, bias, Fill::Random, device)
    }

    pub(crate) fn init_with(
        d_in: usize,
        d_out: usize,
        std: f64,
        bias: bool,
        fill: Fill,
        device: &B::Device,
    ) -> Self {
        Proj {
            weight: fill.normal([d_in, d_out], std, device),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
            lora: None,
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.dims()
    }

    /// `[b, t, d_in]` → `[b, t, d_out]`, as one `[b·t, d_in]` matmul. (Burn's `Linear`
    /// multiplies each batch row separately on a 3-D input, and its weight gradient is then
    /// `b` small matmuls; flattened, GPT-2 124M trains about 10% faster at batch 4.)
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d_in] = x.dims();
        let d_out = self.dims()[1];
        let x = x.reshape([b * t, d_in]); // [b·t, d_in]
        let bias = self.bias.as_ref().map(|b| b.val());
        // Only an adapter needs `x` twice: a second handle would keep Burn from reusing
        // its buffer in place.
        let y = match &self.lora {
            None => linear(x, self.weight.val(), bias), // [b·t, d_out]
            Some(lora) => {
                let delta = x.clone().matmul(lora.a.val()).matmul(lora.b.val()); // [b·t, d_out]
                linear(x, self.weight.val(), bias) + delta * lora.scale
            }
        };
        y.reshape([b, t, d_out])
    }

    /// Adds a fresh adapter (A Kaiming-uniform, B zeros), replacing any.
    pub fn with_lora(mut self, rank: usize, scale: f64, device: &B::Device) -> Self {
        let [d_in, d_out] = self.dims();
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Tensor::random([d_in, rank], Distribution::Uniform(-bound, bound), device);
        self.lora = Some(Lora {
            a: Param::from_tensor(a),
            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
            scale,
        });
        self
    }

    /// Folds the adapter into the weight, `W + A·B·scale`, and drops it.
    pub fn merged(mut self) -> Self {
        if let Some(lora) = self.lora.take() {
            let delta = lora.a.val().matmul(lora.b.val()) * lora.scale; // [d_in, d_out]
                                                                        // A new leaf: on an autodiff backend the sum would otherwise be part of a graph.
            let w = (self.weight.val() + delta).detach();
            self.weight = Param::initialized(self.weight.id, w);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::Gpt2Config;

    type B = Flex;

    fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn a_fresh_adapter_changes_nothing_and_a_merged_one_computes_the_same() {
        let device = Default::default();
        <B as Backend>::seed(&device, 7);
        let model = Gpt2Config::tiny().init::<B>(&device).unwrap();
        let ids = model.tokens(&[&[1, 2, 3, 4, 5]], &device).unwrap();
        let base = model.forward(ids.clone());
        let mut adapted = model
            .with_lora(&LoraConfig::new(4, Some(8.0)), &device)
            .unwrap();
        assert!(adapted.has_lora());
        assert!(max_diff(adapted.forward(ids.clone()), base.clone()) == 0.0);
        // Give every B some weight, as training would.
        for block in &mut adapted.h {
            let lora = block.attn.c_attn.lora.as_mut().unwrap();
            let b = Tensor::random(lora.b.dims(), Distribution::Normal(0.0, 0.1), &device);
            lora.b = Param::from_tensor(b);
        }
        let logits = adapted.forward(ids.clone());
        assert!(
            max_diff(logits.clone(), base) > 1e-3,
            "the adapter must matter"
        );
        let merged = adapted.merge_lora();
        assert!(!merged.has_lora());
        let d = max_diff(merged.forward(ids), logits);
        assert!(d < 1e-5, "merged logits differ by {d}");
    }

    #[test]
    fn bad_lora_settings_name_the_value() {
        let mut c = LoraConfig::new(4, None);
        c.targets = vec!["c_attn".into(), "q_proj".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("\"q_proj\"") && e.contains("c_fc"), "{e}");
        let e = LoraConfig::new(0, None).validate().unwrap_err().to_string();
        assert!(e.contains("lora.rank"), "{e}");
        assert_eq!(LoraConfig::new(8, Some(16.0)).scale(), 2.0);
    }
}
