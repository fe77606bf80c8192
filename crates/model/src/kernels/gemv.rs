//! Slice kernels for generation on the CPU: small-batch matrix products (`[m, k] · [n, k]ᵀ`
//! for a few rows `m`, in f32 and in Q8_0) and attention of new tokens over a KV cache.
//!
//! Decode multiplies one row per sequence by every weight matrix: it is bound by memory
//! bandwidth, so each weight row is streamed once, by one thread, and dotted with every
//! activation row while it is in L1. Rows of outputs are split across threads (rayon).
//!
//! f32 dot products run over 16 fixed lanes (LLVM vectorises them for the instruction set
//! each entry point is compiled for), adding in the same order on every CPU. int8 dot
//! products use `vpdpbusd` (AVX-512 VNNI), `vpmaddubsw` (AVX2) or plain integers.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::q8::{Q8Matrix, Q8Rows, Q8_BLOCK};
use super::simd;

const LANES: usize = 16;
/// Output rows per parallel task.
const TILE: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Avx512Vnni,
    Avx512,
    Avx2,
    Baseline,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma");
            if avx512 && is_x86_feature_detected!("avx512vnni") {
                return Level::Avx512Vnni;
            }
            if avx512 {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Baseline
    })
}

/// The kernels this CPU runs: `avx512-vnni`, `avx512`, `avx2` or `scalar`.
pub fn kernel_level() -> &'static str {
    match level() {
        Level::Avx512Vnni => "avx512-vnni",
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Baseline => "scalar",
    }
}

// ---- f32 -------------------------------------------------------------------------------

/// `x · w[j]` for four rows `w[j]` at once: four independent chains of 16 lanes.
#[inline(always)]
fn dot4_lanes(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let k = x.len();
    let full = k / LANES * LANES;
    let mut i = 0;
    while i < full {
        let xs: &[f32; LANES] = x[i..i + LANES].try_into().unwrap();
        for r in 0..4 {
            let ws: &[f32; LANES] = w[r][i..i + LANES].try_into().unwrap();
            for l in 0..LANES {
                acc[r][l] += xs[l] * ws[l];
            }
        }
        i += LANES;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        let tail: f32 = (full..k).map(|i| x[i] * w[r][i]).sum();
        out[r] = acc[r].iter().sum::<f32>() + tail;
    }
    out
}

#[inline(always)]
fn dot1_lanes(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let k = x.len();
    let full = k / LANES * LANES;
    let mut i = 0;
    while i < full {
        let xs: &[f32; LANES] = x[i..i + LANES].try_into().unwrap();
        let ws: &[f32; LANES] = w[i..i + LANES].try_into().unwrap();
        for l in 0..LANES {
            acc[l] += xs[l] * ws[l];
        }
        i += LANES;
    }
    acc.iter().sum::<f32>() + (full..k).map(|i| x[i] * w[i]).sum::<f32>()
}

/// `out[j·m + r] = x[r] · w[j]` for the rows `w` of one tile (`out` is `[rows, m]`).
#[inline(always)]
fn tile_f32_lanes(x: &[f32], m: usize, w: &[f32], k: usize, out: &mut [f32]) {
    let rows = w.len() / k;
    let mut j = 0;
    while j + 4 <= rows {
        let ws = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
        for r in 0..m {
            let d = dot4_lanes(&x[r * k..(r + 1) * k], ws);
            for (q, v) in d.into_iter().enumerate() {
                out[(j + q) * m + r] = v;
            }
        }
        j += 4;
    }
    for j in j..rows {
        for r in 0..m {
            out[j * m + r] = dot1_lanes(&x[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
}

/// `Σ_j p[j] · v[j]` over rows of `d` values into `out`: attention's weighted sum.
#[inline(always)]
fn weighted_sum_lanes(p: &[f32], v: &[f32], out: &mut [f32]) {
    let d = out.len();
    out.fill(0.0);
    for (pj, row) in p.iter().zip(v.chunks_exact(d)) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += pj * x;
        }
    }
}

/// `scores[j] = scale · q · k[j]` for rows of `d` values.
#[inline(always)]
fn scores_lanes(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
    let d = q.len();
    for (s, row) in scores.iter_mut().zip(keys.chunks_exact(d)) {
        *s = scale * dot1_lanes(q, row);
    }
}

macro_rules! compiled_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub fn tile_f32(x: &[f32], m: usize, w: &[f32], k: usize, out: &mut [f32]) {
                super::tile_f32_lanes(x, m, w, k, out)
            }
            #[target_feature(enable = $features)]
            pub fn weighted_sum(p: &[f32], v: &[f32], out: &mut [f32]) {
                super::weighted_sum_lanes(p, v, out)
            }
            #[target_feature(enable = $features)]
            pub fn scores(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
                super::scores_lanes(q, keys, scale, scores)
            }
        }
    };
}
compiled_for!(avx512, "avx512f");
compiled_for!(avx2, "avx2,fma");

fn tile_f32(x: &[f32], m: usize, w: &[f32], k: usize, out: &mut [f32]) {
    match level() {
        // SAFETY: `level` checked that the CPU has the features these were compiled for.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::tile_f32(x, m, w, k, out) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::tile_f32(x, m, w, k, out) },
        _ => tile_f32_lanes(x, m, w, k, out),
    }
}

fn weighted_sum(p: &[f32], v: &[f32], out: &mut [f32]) {
    match level() {
        // SAFETY: as in `tile_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::weighted_sum(p, v, out) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::weighted_sum(p, v, out) },
        _ => weighted_sum_lanes(p, v, out),
    }
}

fn scores(q: &[f32], keys: &[f32], scale: f32, out: &mut [f32]) {
    match level() {
        // SAFETY: as in `tile_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => unsafe { avx512::scores(q, keys, scale, out) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::scores(q, keys, scale, out) },
        _ => scores_lanes(q, keys, scale, out),
    }
}

/// Runs `tile(first_row, rows_of_w, out_tile)` over tiles of output rows in parallel and
/// returns `y [m, n] = out + bias`, from the tiles' `[n, m]`.
fn by_tiles(
    m: usize,
    n: usize,
    bias: Option<&[f32]>,
    tile: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(TILE * m)
        .enumerate()
        .for_each(|(t, out)| tile(t * TILE, out));
    let mut y = if m == 1 {
        yt
    } else {
        let mut y = vec![0f32; m * n];
        for (j, col) in yt.chunks_exact(m).enumerate() {
            for (r, v) in col.iter().enumerate() {
                y[r * n + j] = *v;
            }
        }
        y
    };
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
    y
}

/// `y [m, n] = x [m, k] · w [n, k]ᵀ + bias`, for a few rows `m` (each weight row is read
/// once).
pub fn gemv_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "gemv: x [{m}, {k}] · w [{n}, {k}]ᵀ"
    );
    by_tiles(m, n, bias, |j0, out| {
        let rows = out.len() / m;
        tile_f32(x, m, &w[j0 * k..(j0 + rows) * k], k, out);
    })
}

/// `y [m, n] = x [m, k] · w [n, k]ᵀ + bias` with gemm (many rows: prefill).
pub fn gemm_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "gemm: x [{m}, {k}] · w [{n}, {k}]ᵀ"
    );
    let mut y = match bias {
        Some(b) => b.repeat(m),
        None => vec![0f32; m * n],
    };
    // SAFETY: y is [m, n] row-major, x [m, k] row-major, and w [n, k] row-major read as its
    // transpose [k, n] through the strides; every index stays inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    y
}

// ---- int8 ------------------------------------------------------------------------------

/// `Σ_b dx[b] · dw[b] · Σ_i xq · wq` over the blocks of one row.
fn dot_q8_scalar(xq: &[i8], xs: &[f32], wq: &[i8], ws: &[f32]) -> f32 {
    let mut sum = 0f32;
    for (b, (x, w)) in xq
        .chunks_exact(Q8_BLOCK)
        .zip(wq.chunks_exact(Q8_BLOCK))
        .enumerate()
    {
        let dot: i32 = x.iter().zip(w).map(|(&a, &b)| a as i32 * b as i32).sum();
        sum += dot as f32 * (xs[b] * ws[b]);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Q8_BLOCK;

    #[inline(always)]
    unsafe fn hsum(acc: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(_mm_hadd_ps(s, s))
    }

    /// Each block: `|x| · (w · sign x)` as unsigned × signed bytes into i32 lanes, then
    /// scaled and added in f32. `dot` is the byte product instruction.
    macro_rules! dot_q8 {
        ($name:ident, $features:literal, |$ax:ident, $sw:ident| $dot:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(xq: &[i8], xs: &[f32], wq: &[i8], ws: &[f32]) -> f32 {
                let blocks = ws.len();
                debug_assert!(xq.len() >= blocks * Q8_BLOCK && wq.len() >= blocks * Q8_BLOCK);
                let mut acc = [_mm256_setzero_ps(); 2];
                for b in 0..blocks {
                    let x = _mm256_loadu_si256(xq.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
                    let w = _mm256_loadu_si256(wq.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
                    let $ax = _mm256_sign_epi8(x, x);
                    let $sw = _mm256_sign_epi8(w, x);
                    let dot: __m256i = $dot;
                    let d = _mm256_set1_ps(*xs.get_unchecked(b) * *ws.get_unchecked(b));
                    acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[b & 1]);
                }
                hsum(_mm256_add_ps(acc[0], acc[1]))
            }
        };
    }

    dot_q8!(dot_q8_avx2, "avx2,fma", |ax, sw| _mm256_madd_epi16(
        _mm256_maddubs_epi16(ax, sw),
        _mm256_set1_epi16(1)
    ));
    dot_q8!(
        dot_q8_vnni,
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        |ax, sw| _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw)
    );
}

fn dot_q8(xq: &[i8], xs: &[f32], wq: &[i8], ws: &[f32]) -> f32 {
    match level() {
        // SAFETY: `level` checked the features; the slices hold `ws.len()` whole blocks.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => unsafe { x86::dot_q8_vnni(xq, xs, wq, ws) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx2 => unsafe { x86::dot_q8_avx2(xq, xs, wq, ws) },
        _ => dot_q8_scalar(xq, xs, wq, ws),
    }
}

/// `y [m, n] = x · w [n, k]ᵀ + bias` for activations `x` already quantized.
pub fn gemv_q8(x: &Q8Rows, m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let kb = k / Q8_BLOCK;
    assert!(x.qs.len() == m * k, "gemv q8: x [{m}, ?] · w [{n}, {k}]ᵀ");
    by_tiles(m, n, bias, |j0, out| {
        let rows = out.len() / m;
        for j in 0..rows {
            let row = j0 + j;
            let (wq, ws) = (
                &w.qs[row * k..(row + 1) * k],
                &w.scales[row * kb..(row + 1) * kb],
            );
            for r in 0..m {
                let (xq, xs) = (&x.qs[r * k..(r + 1) * k], &x.scales[r * kb..(r + 1) * kb]);
                out[j * m + r] = dot_q8(xq, xs, wq, ws);
            }
        }
    })
}

// ---- attention over a cache ---------------------------------------------------------------

/// One head of one new token: `softmax(scale · q · Kᵀ) · V` over `keys`/`values`
/// (`[t, d]` each), into `out [d]`; `buf` is scratch of at least `t` values.
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    buf: &mut Vec<f32>,
    out: &mut [f32],
) {
    let t = keys.len() / q.len();
    buf.resize(t, 0.0);
    let s = &mut buf[..t];
    scores(q, keys, scale, s);
    let max = simd::max(s);
    let total = simd::sum_exp(s, max);
    simd::scaled_exp(s, max, (1.0 / total) as f32);
    weighted_sum(s, values, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q8::quantize_rows;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7919) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, bias: &[f32]) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = bias[j] as f64
                    + (0..k)
                        .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                        .sum::<f64>();
            }
        }
        y
    }

    #[test]
    fn f32_products_match_f64_for_every_row_count() {
        let (n, k) = (37, 96);
        let w = data(n * k, 3);
        let bias = data(n, 5);
        for m in [1, 2, 3, 8, 17] {
            let x = data(m * k, m);
            let want = reference(&x, m, &w, n, k, &bias);
            for got in [
                gemv_f32(&x, m, &w, n, k, Some(&bias)),
                gemm_f32(&x, m, &w, n, k, Some(&bias)),
            ] {
                for (g, e) in got.iter().zip(&want) {
                    assert!((*g as f64 - e).abs() < 1e-4, "m {m}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn int8_products_match_the_integer_reference() {
        let (n, k) = (21, 128);
        let w = Q8Matrix::quantize(&data(n * k, 1), n, k);
        for m in [1, 4] {
            let x = quantize_rows(&data(m * k, 9));
            let got = gemv_q8(&x, m, &w, None);
            for r in 0..m {
                for j in 0..n {
                    let kb = k / Q8_BLOCK;
                    let want = dot_q8_scalar(
                        &x.qs[r * k..(r + 1) * k],
                        &x.scales[r * kb..(r + 1) * kb],
                        &w.qs[j * k..(j + 1) * k],
                        &w.scales[j * kb..(j + 1) * kb],
                    );
                    let g = got[r * n + j];
                    assert!(
                        (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn attention_is_a_softmax_weighted_sum() {
        let (t, d) = (5, 16);
        let (q, keys, values) = (data(d, 1), data(t * d, 2), data(t * d, 3));
        let mut out = vec![0f32; d];
        attend(&q, &keys, &values, 0.25, &mut Vec::new(), &mut out);
        let s: Vec<f64> = (0..t)
            .map(|j| {
                0.25 * (0..d)
                    .map(|i| q[i] as f64 * keys[j * d + i] as f64)
                    .sum::<f64>()
            })
            .collect();
        let z: f64 = s.iter().map(|v| v.exp()).sum();
        for i in 0..d {
            let want: f64 = (0..t)
                .map(|j| s[j].exp() / z * values[j * d + i] as f64)
                .sum();
            assert!((out[i] as f64 - want).abs() < 1e-5, "{} vs {want}", out[i]);
        }
    }
}
