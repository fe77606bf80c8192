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

/// The per-element constants of one update, in f32 as Burn rounds them for f32 tensors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coefficients {
    /// The first update: the moments start at `(1 − β1)·g` and `(1 − β2)·g²`.
    first: bool,
    beta_1: f32,
    factor_1: f32,
    beta_2: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    /// `1 − lr·wd`, or `None` when `lr·wd = 0` (as Burn tests it: no multiply at all).
    decay: Option<f32>,
    lr: f32,
}

impl AdamWStep {
    /// `lr · wd`: Burn skips the decay when it is 0.
    fn decay_rate(&self) -> f64 {
        self.lr * self.weight_decay as f64
    }

    pub(crate) fn coefficients(&self) -> Coefficients {
        let time = self.time as i32;
        let decay_rate = self.decay_rate();
        Coefficients {
            first: self.time == 1,
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

/// The update of one element: `(p, m, v)` after it (`m`, `v` are unread on the first).
#[inline(always)]
pub(crate) fn update(p: f32, g: f32, m: f32, v: f32, c: &Coefficients) -> (f32, f32, f32) {
    let (m, v) = match c.first {
        true => (g * c.factor_1, g * g * c.factor_2),
        false => (
            m * c.beta_1 + g * c.factor_1,
            v * c.beta_2 + g * g * c.factor_2,
        ),
    };
    let delta = (m / c.correction_1) / ((v / c.correction_2).sqrt() + c.epsilon);
    let decayed = match c.decay {
        Some(d) => p * d,
        None => p,
    };
    (decayed - delta * c.lr, m, v)
}

/// The generic default: Burn's `AdamW` op for op, its scalars passed as Burn passes them
/// (f64, rounded by the backend to the tensors' type).
pub(super) fn step_default<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moments: Option<(FloatTensor<B>, FloatTensor<B>)>,
    step: AdamWStep,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let scale = |x: FloatTensor<B>, s: f64| B::float_mul_scalar(x, Scalar::Float(s));
    let (b1, b2) = (step.beta_1, step.beta_2);
    let m_new = scale(grad.clone(), (1.0 - b1) as f64);
    let v_new = scale(B::float_mul(grad.clone(), grad), (1.0 - b2) as f64);
    let (m, v) = match moments {
        Some((m, v)) => (
            B::float_add(scale(m, b1 as f64), m_new),
            B::float_add(scale(v, b2 as f64), v_new),
        ),
        None => (m_new, v_new),
    };
    let time = step.time as i32;
    let m_hat = B::float_div_scalar(m.clone(), Scalar::Float((1.0 - b1.powi(time)) as f64));
    let v_hat = B::float_div_scalar(v.clone(), Scalar::Float((1.0 - b2.powi(time)) as f64));
    let epsilon = Scalar::Float(step.epsilon as f64);
    let delta = B::float_div(m_hat, B::float_add_scalar(B::float_sqrt(v_hat), epsilon));
    let rate = step.decay_rate();
    let decayed = if rate == 0.0 {
        param
    } else {
        scale(param, 1.0 - rate)
    };
    (B::float_sub(decayed, scale(delta, step.lr)), m, v)
}
