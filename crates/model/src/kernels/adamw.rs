//! One AdamW update of one parameter ([`KernelBackend::adamw_step`]), operation for
//! operation as Burn's `AdamW` computes it, so that a run gives the same numbers with
//! either:
//!
//! ```text
//! m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
//! p ← p·(1 − lr·wd) − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
//! ```
//!
//! Burn runs that as a dozen tensor ops, each a pass over the parameter with a fresh
//! buffer; Flex runs it as one pass, in place ([`update`]).
//!
//! [`KernelBackend::adamw_step`]: super::KernelBackend::adamw_step

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Scalar;

/// AdamW's settings for one update: the step's learning rate and its count `time`
/// (1 on the first update, for the bias corrections).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub time: usize,
}

/// The per-element constants of one update, in f32 as Burn rounds them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coefficients {
    beta_1: f32,
    factor_1: f32,
    beta_2: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    /// `1 − lr·wd`, or `None` without weight decay (the parameter is not multiplied).
    decay: Option<f32>,
    lr: f32,
}

impl AdamWStep {
    pub(crate) fn coefficients(&self) -> Coefficients {
        let time = self.time as i32;
        let decay_rate = self.lr * self.weight_decay as f64;
        Coefficients {
            beta_1: self.beta_1,
            factor_1: 1.0 - self.beta_1,
            beta_2: self.beta_2,
            factor_2: 1.0 - self.beta_2,
            correction_1: 1.0 - self.beta_1.powi(time),
            correction_2: 1.0 - self.beta_2.powi(time),
            epsilon: self.epsilon,
            decay: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: self.lr as f32,
        }
    }
}

/// The update of one element: `(p, m, v)` after it.
#[inline(always)]
pub(crate) fn update(p: f32, g: f32, m: f32, v: f32, c: &Coefficients) -> (f32, f32, f32) {
    let m = m * c.beta_1 + g * c.factor_1;
    let v = v * c.beta_2 + g * g * c.factor_2;
    let delta = (m / c.correction_1) / ((v / c.correction_2).sqrt() + c.epsilon);
    let decayed = match c.decay {
        Some(d) => p * d,
        None => p,
    };
    (decayed - delta * c.lr, m, v)
}

/// The generic default: Burn's tensor ops, as Burn's `AdamW` orders them.
pub(super) fn step_default<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    step: AdamWStep,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let c = step.coefficients();
    let scale = |x: FloatTensor<B>, s: f32| B::float_mul_scalar(x, Scalar::Float(s as f64));
    let m = B::float_add(scale(moment_1, c.beta_1), scale(grad.clone(), c.factor_1));
    let g2 = B::float_mul(grad.clone(), grad);
    let v = B::float_add(scale(moment_2, c.beta_2), scale(g2, c.factor_2));
    let m_hat = B::float_div_scalar(m.clone(), Scalar::Float(c.correction_1 as f64));
    let v_hat = B::float_div_scalar(v.clone(), Scalar::Float(c.correction_2 as f64));
    let denominator = B::float_add_scalar(B::float_sqrt(v_hat), Scalar::Float(c.epsilon as f64));
    let delta = B::float_div(m_hat, denominator);
    let decayed = match c.decay {
        Some(d) => scale(param, d),
        None => param,
    };
    (B::float_sub(decayed, scale(delta, c.lr)), m, v)
}
