//! The learning-rate schedule: linear warmup, then cosine decay to a floor.

use crate::config::{OptimizerConfig, ScheduleConfig};

/// Learning rate at `step` (0-based): `lr · (step + 1) / warmup` during warmup, then a
/// cosine from `lr` down to `min_lr` at `decay_steps`, and `min_lr` after (nanoGPT's
/// `get_lr`).
pub fn learning_rate(step: usize, opt: &OptimizerConfig, s: &ScheduleConfig) -> f64 {
    let decay_steps = s.decay_steps.unwrap_or(s.max_steps).max(1);
    if step < s.warmup_steps {
        return opt.lr * (step + 1) as f64 / s.warmup_steps as f64;
    }
    if step >= decay_steps {
        return s.min_lr;
    }
    let span = (decay_steps - s.warmup_steps).max(1) as f64;
    let ratio = (step - s.warmup_steps) as f64 / span;
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    s.min_lr + coeff * (opt.lr - s.min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let opt = OptimizerConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let s = ScheduleConfig {
            max_steps: 110,
            warmup_steps: 10,
            decay_steps: None,
            min_lr: 1e-4,
        };
        let lr = |step| learning_rate(step, &opt, &s);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - 5.5e-4).abs() < 1e-12, "{}", lr(60));
        assert!((lr(110) - 1e-4).abs() < 1e-12);
        assert!((lr(500) - 1e-4).abs() < 1e-12);
        for step in 10..110 {
            assert!(lr(step + 1) <= lr(step), "not decreasing at {step}");
        }
    }
}
