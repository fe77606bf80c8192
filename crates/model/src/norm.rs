//! [`Norm`]: the normalisation of `ln_1`, `ln_2` and `ln_f`, LayerNorm (GPT-2) or RMSNorm
//! (Llama). Both keep LayerNorm's parameter names, `gamma` and (LayerNorm only) `beta`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::config::NormKind;

/// `ln_*`: LayerNorm `(x − mean)/√(var + ε)·γ + β` or RMSNorm `x/√(mean(x²) + ε)·γ`, over
/// the last dimension.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    /// `[n_embd]`, initialised to 1.
    pub gamma: Param<Tensor<B, 1>>,
    /// `[n_embd]`, initialised to 0; LayerNorm only.
    pub beta: Option<Param<Tensor<B, 1>>>,
    epsilon: f64,
    /// Not in the record (a checkpoint's kind comes from its config).
    #[module(skip)]
    kind: NormKind,
}

impl<B: Backend> Norm<B> {
    /// A fresh norm over `n_embd` features: γ = 1 and, for LayerNorm, β = 0.
    pub fn new(kind: NormKind, n_embd: usize, epsilon: f64, device: &B::Device) -> Self {
        let beta = (kind == NormKind::LayerNorm)
            .then(|| Param::from_tensor(Tensor::zeros([n_embd], device)));
        Norm {
            gamma: Param::from_tensor(Tensor::ones([n_embd], device)),
            beta,
            epsilon,
            kind,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.kind {
            // Burn's own LayerNorm op, so GPT-2's numbers are exactly what they were.
            NormKind::LayerNorm => Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
                x.into_primitive().tensor(),
                self.gamma.val().into_primitive().tensor(),
                self.beta
                    .as_ref()
                    .map(|b| b.val().into_primitive().tensor()),
                self.epsilon,
            ))),
            NormKind::RmsNorm => {
                let inv_rms = (x.clone().square().mean_dim(D - 1) + self.epsilon)
                    .sqrt()
                    .recip(); // [.., 1]
                x * inv_rms * self.gamma.val().unsqueeze()
            }
        }
    }
}
