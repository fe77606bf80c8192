//! The spike guard: llm.c's outlier detector for the loss and the gradient norm.
//!
//! It keeps the last `window` losses and gradient norms. A new step is a spike when its value
//! lies more than `z` standard deviations above the mean of the window before it. Every
//! step joins the window, skipped or not, as in llm.c: a lasting shift in the loss (a new
//! region of the data, say) is absorbed within a window instead of skipping every step
//! after it. Its state goes into checkpoints, so a resumed run judges exactly as an
//! uninterrupted one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::GuardConfig;

/// The recent values the guard judges against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeGuard {
    losses: VecDeque<f64>,
    grad_norms: VecDeque<f64>,
}

/// A value that stands out.
#[derive(Clone, Debug, PartialEq)]
pub struct Spike {
    /// `the loss` or `the gradient norm`.
    pub what: &'static str,
    pub value: f64,
    /// How many standard deviations above the mean.
    pub z: f64,
    pub mean: f64,
}

/// The z-score of `value` against `history`, once `history` holds `window` values.
fn z_score(history: &VecDeque<f64>, window: usize, value: f64) -> Option<(f64, f64)> {
    if history.len() < window {
        return None;
    }
    let n = history.len() as f64;
    let mean = history.iter().sum::<f64>() / n;
    let var = history.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (std > 0.0).then(|| ((value - mean) / std, mean))
}

impl SpikeGuard {
    /// Judges a step's loss and gradient norm (before its update is applied).
    pub fn check(&self, config: &GuardConfig, loss: f64, grad_norm: f64) -> Option<Spike> {
        let checks = [
            ("the loss", &self.losses, config.loss_z, loss),
            (
                "the gradient norm",
                &self.grad_norms,
                config.grad_z,
                grad_norm,
            ),
        ];
        checks
            .into_iter()
            .find_map(|(what, history, limit, value)| {
                let (z, mean) = z_score(history, config.window, value)?;
                (limit > 0.0 && z > limit).then_some(Spike {
                    what,
                    value,
                    z,
                    mean,
                })
            })
    }

    /// Adds a step's values, dropping the oldest beyond `window`.
    pub fn record(&mut self, config: &GuardConfig, loss: f64, grad_norm: f64) {
        for (history, value) in [(&mut self.losses, loss), (&mut self.grad_norms, grad_norm)] {
            history.push_back(value);
            while history.len() > config.window {
                history.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: usize) -> GuardConfig {
        GuardConfig {
            window,
            loss_z: 3.0,
            grad_z: 3.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_spike_is_judged_once_the_window_is_full() {
        let c = config(4);
        let mut g = SpikeGuard::default();
        for (loss, norm) in [(3.0, 1.0), (3.1, 1.1), (2.9, 0.9)] {
            assert_eq!(g.check(&c, 100.0, 100.0), None, "window not full yet");
            g.record(&c, loss, norm);
        }
        g.record(&c, 3.0, 1.0);
        assert_eq!(g.check(&c, 3.05, 1.02), None);
        let spike = g.check(&c, 9.0, 1.0).unwrap();
        assert_eq!(spike.what, "the loss");
        assert!(
            spike.z > 80.0 && (spike.mean - 3.0).abs() < 1e-12,
            "{spike:?}"
        );
        assert_eq!(g.check(&c, 3.0, 5.0).unwrap().what, "the gradient norm");
        // A low value is no spike, and a threshold of 0 turns a check off.
        assert_eq!(g.check(&c, 0.1, 1.0), None);
        let off = GuardConfig {
            loss_z: 0.0,
            ..c.clone()
        };
        assert_eq!(g.check(&off, 9.0, 1.0), None);
        // The window slides.
        for _ in 0..4 {
            g.record(&c, 9.0, 1.0);
        }
        assert_eq!(g.losses.len(), 4);
        assert_eq!(
            g.check(&c, 9.0, 1.0),
            None,
            "a constant window has no spread"
        );
    }
}
