//! Row kernels with a vectorised `exp`, compiled for AVX-512, for AVX2 + FMA and for the
//! baseline, and picked at run time (the same machine code runs on every x86-64 CPU).
//!
//! The loops are written over fixed lanes so that LLVM vectorises them; `exp` is
//! branch-free (Cephes' `expf`: `2^k · p(r)`, relative error about 1e-7).

use super::adamw::{self, Coefficients};
use super::cpu::{level, Level};

const LANES: usize = 16;

/// `e^x` in f32: exactly 0 below −87 (where f32 would go subnormal), NaN for NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let clamped = if x > 88.0 { 88.0 } else { x };
    let clamped = if clamped < -87.0 { -87.0 } else { clamped };
    let kr = clamped * LOG2E + ROUND; // k = round(x / ln 2), in the low mantissa bits
    let k = kr - ROUND;
    let r = clamped - k * LN2_HI - k * LN2_LO; // |r| ≤ ln 2 / 2
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0; // e^r
    let k = kr.to_bits() as i32 - 0x4B40_0000;
    let two_k = f32::from_bits(((k + 127) << 23) as u32); // 2^k
    if x < -87.0 {
        0.0
    } else {
        y * two_k
    }
}

#[inline(always)]
fn max_lanes(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Σ e^(x − shift), accumulated in f64 so that a 50,257-wide row loses nothing.
#[inline(always)]
fn sum_exp_lanes(row: &[f32], shift: f32) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += exp(c[i] - shift) as f64;
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|&x| exp(x - shift) as f64).sum::<f64>()
}

#[inline(always)]
fn scaled_exp_lanes(row: &mut [f32], shift: f32, scale: f32) {
    for x in row.iter_mut() {
        *x = scale * exp(*x - shift);
    }
}

/// GPT-2's GELU, `x / (1 + e^(−2·√(2/π)·(x + 0.044715·x³)))` (= `0.5·x·(1 + tanh(…))`),
/// in place.
#[inline(always)]
fn gelu_tanh_lanes(row: &mut [f32]) {
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    for x in row.iter_mut() {
        let v = *x;
        let z = (v * v * 0.044715 + 1.0) * v * -TWO_SQRT_2_OVER_PI;
        *x = v / (exp(z) + 1.0);
    }
}

/// The GELU's backward, `dy ← dy · gelu'(x)`, in place over `dy`, as
/// `gelu'(x) = s·(1 + x·e·s·u')` with `e = e^(−u)` (capped), `s = 1 / (1 + e)`
/// and `u = 2·√(2/π)·(x + 0.044715·x³)` (see `gelu::backward_default`).
#[inline(always)]
fn gelu_tanh_backward_lanes(x: &[f32], dy: &mut [f32]) {
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    for (&v, g) in x.iter().zip(dy.iter_mut()) {
        let minus_u = (v * v * 0.044715 + 1.0) * v * -TWO_SQRT_2_OVER_PI;
        let e = exp(minus_u.min(super::gelu::MAX_EXPONENT));
        let s = 1.0 / (e + 1.0);
        let du = (v * v * (3.0 * 0.044715) + 1.0) * TWO_SQRT_2_OVER_PI;
        *g *= (e * s * v * du + 1.0) * s; // e·s ≤ 1 first: no overflow
    }
}

/// One AdamW update over a run of elements ([`adamw::update`] each), in place.
#[inline(always)]
fn adamw_lanes(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Coefficients) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        (*p, *m, *v) = adamw::update(*p, g, *m, *v, c);
    }
}

/// One module of entry points per instruction set; each inlines the lane loops above.
macro_rules! compiled_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub fn max(row: &[f32]) -> f32 {
                super::max_lanes(row)
            }
            #[target_feature(enable = $features)]
            pub fn sum_exp(row: &[f32], shift: f32) -> f64 {
                super::sum_exp_lanes(row, shift)
            }
            #[target_feature(enable = $features)]
            pub fn scaled_exp(row: &mut [f32], shift: f32, scale: f32) {
                super::scaled_exp_lanes(row, shift, scale)
            }
            #[target_feature(enable = $features)]
            pub fn gelu_tanh(row: &mut [f32]) {
                super::gelu_tanh_lanes(row)
            }
            #[target_feature(enable = $features)]
            pub fn gelu_tanh_backward(x: &[f32], dy: &mut [f32]) {
                super::gelu_tanh_backward_lanes(x, dy)
            }
            #[target_feature(enable = $features)]
            pub fn adamw(
                p: &mut [f32],
                g: &[f32],
                m: &mut [f32],
                v: &mut [f32],
                c: &super::Coefficients,
            ) {
                super::adamw_lanes(p, g, m, v, c)
            }
        }
    };
}
compiled_for!(avx512, "avx512f");
compiled_for!(avx2, "avx2,fma");

/// The largest element of a row (NaN elements are skipped; [`sum_exp`] propagates them).
pub fn max(row: &[f32]) -> f32 {
    match level() {
        // SAFETY: `level` checked that the CPU has the features these were compiled for.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::max(row) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::max(row) },
        _ => max_lanes(row),
    }
}

/// `Σ e^(x − shift)` over a row.
pub fn sum_exp(row: &[f32], shift: f32) -> f64 {
    match level() {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::sum_exp(row, shift) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::sum_exp(row, shift) },
        _ => sum_exp_lanes(row, shift),
    }
}

/// `ln Σ e^x` over a row (vectorised, summed in f64): a softmax's normaliser.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let m = max(row);
    m as f64 + sum_exp(row, m).ln()
}

/// `x ← scale · e^(x − shift)` over a row, in place.
pub fn scaled_exp(row: &mut [f32], shift: f32, scale: f32) {
    match level() {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::scaled_exp(row, shift, scale) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::scaled_exp(row, shift, scale) },
        _ => scaled_exp_lanes(row, shift, scale),
    }
}

/// GPT-2's tanh GELU over a row, in place (the formula of `llm_model::gelu_tanh`).
pub fn gelu_tanh(row: &mut [f32]) {
    match level() {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::gelu_tanh(row) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::gelu_tanh(row) },
        _ => gelu_tanh_lanes(row),
    }
}

/// The GELU's backward over a row: `dy ← dy · gelu'(x)`, in place (`x` and `dy` the same
/// length).
pub fn gelu_tanh_backward(x: &[f32], dy: &mut [f32]) {
    match level() {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::gelu_tanh_backward(x, dy) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::gelu_tanh_backward(x, dy) },
        _ => gelu_tanh_backward_lanes(x, dy),
    }
}

/// One AdamW update of parameters `p` with gradients `g` and moments `m`, `v`, in place
/// (all four the same length).
pub(crate) fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Coefficients) {
    match level() {
        // SAFETY: as in `max`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::adamw(p, g, m, v, c) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::adamw(p, g, m, v, c) },
        _ => adamw_lanes(p, g, m, v, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm_over_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn every_instruction_set_gives_the_scalar_answer() {
        let row: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let m = max_lanes(&row);
        assert_eq!(max(&row), m);
        assert_eq!(m, row.iter().cloned().fold(f32::MIN, f32::max));
        let s = sum_exp_lanes(&row, m);
        assert!((sum_exp(&row, m) - s).abs() <= 1e-12 * s);
        let want: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
        assert!((s - want).abs() < 1e-6 * want, "{s} vs {want}");
        let mut a = row.clone();
        let mut b = row.clone();
        scaled_exp(&mut a, m, 0.5);
        scaled_exp_lanes(&mut b, m, 0.5);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs(), "{x} vs {y}");
        }
        let mut a = row.clone();
        let mut b = row.clone();
        gelu_tanh(&mut a);
        gelu_tanh_lanes(&mut b);
        assert_eq!(a, b);
        let mut a = vec![0.5f32; row.len()];
        let mut b = a.clone();
        gelu_tanh_backward(&row, &mut a);
        gelu_tanh_backward_lanes(&row, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn gelu_backward_is_the_derivative() {
        let gelu = |v: f64| {
            0.5 * v * (1.0 + (0.797_884_560_802_865_4 * (v + 0.044715 * v * v * v)).tanh())
        };
        for i in 0..=6_000 {
            let x = -30.0 + 60.0 * i as f32 / 6_000.0;
            let (v, h) = (x as f64, 1e-4);
            let want = 0.75 * (gelu(v + h) - gelu(v - h)) / (2.0 * h);
            let mut got = [0.75f32];
            gelu_tanh_backward(&[x], &mut got);
            let err = (got[0] as f64 - want).abs();
            assert!(err <= 2e-6, "gelu'({x}) · 0.75 = {} vs {want}", got[0]);
        }
        // Far tails (a diverging run's activations): slope 0 below (to e^-80 · x·u'), 1 above;
        // never NaN or ∞.
        for (x, want) in [(-1e4f32, 0.0f32), (-1e6, 0.0), (1e4, 1.0), (1e6, 1.0)] {
            let mut got = [1.0f32];
            gelu_tanh_backward(&[x], &mut got);
            assert!((got[0] - want).abs() < 1e-12, "gelu'({x}) = {}", got[0]);
        }
    }

    #[test]
    fn gelu_is_the_tanh_formula() {
        for i in 0..=20_000 {
            let x = -30.0 + 60.0 * i as f32 / 20_000.0;
            let v = x as f64;
            let want =
                0.5 * v * (1.0 + (0.797_884_560_802_865_4 * (v + 0.044715 * v * v * v)).tanh());
            let mut got = [x];
            gelu_tanh(&mut got);
            let err = (got[0] as f64 - want).abs();
            assert!(
                err <= 1e-6 * want.abs().max(1.0),
                "gelu({x}) = {} vs {want}",
                got[0]
            );
        }
    }
}
