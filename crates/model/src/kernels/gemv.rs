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

use rayon::prelude::*;

use super::cpu::{level, Level};
use super::q8::{Q8Matrix, Q8Rows, Q8_BLOCK};
use super::simd;

pub use super::cpu::kernel_level;

/// Output rows per parallel task.
const TILE: usize = 16;

// ---- f32 -------------------------------------------------------------------------------

/// The f32 kernels, written once over sixteen lanes `$v` and expanded for each instruction
/// set: `$zero`, `$load(ptr)`, `$splat(f32)`, `$add_mul(acc, x, w)` (`acc + x·w`, rounded
/// twice, as the scalar code does) and `$store(v, &mut [f32; 16])`. Every lane adds in the
/// same order on every CPU, so the answers are the same bits everywhere.
macro_rules! f32_kernels {
    (
        $name:ident, [$($attr:meta),*], $v:ty,
        weight_rows: $wr:literal,
        zero: $zero:expr,
        load: |$lp:ident| $load:expr,
        load_f16: |$hp:ident| $load_f16:expr,
        splat: |$sp:ident| $splat:expr,
        add_mul: |$a:ident, $x:ident, $w:ident| $add_mul:expr,
        store: |$sv:ident, $sout:ident| $store:expr $(,)?
    ) => {
        #[allow(unused_unsafe, clippy::missing_safety_doc)]
        pub(super) mod $name {
            #[allow(unused_imports)]
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            const L: usize = 16;

            /// `out[j][r] = x[r] · w[j]` for `R` rows of `w` and `M` rows of `x` (each `k`
            /// long), with `R · M` chains of sixteen lanes.
            $(#[$attr])*
            #[inline]
            fn block<const R: usize, const M: usize>(
                x: &[f32],
                w: &[f32],
                k: usize,
            ) -> [[f32; M]; R] {
                assert!(x.len() >= M * k && w.len() >= R * k);
                let full = k / L * L;
                let mut acc: [[$v; M]; R] = [[$zero; M]; R];
                let mut i = 0;
                while i < full {
                    // SAFETY: i + 16 ≤ k, and the rows are inside the slices (asserted).
                    let xs: [$v; M] = std::array::from_fn(|r| {
                        let $lp = unsafe { x.as_ptr().add(r * k + i) };
                        unsafe { $load }
                    });
                    for j in 0..R {
                        let $lp = unsafe { w.as_ptr().add(j * k + i) };
                        let wv: $v = unsafe { $load };
                        for r in 0..M {
                            let ($a, $x, $w) = (acc[j][r], xs[r], wv);
                            acc[j][r] = unsafe { $add_mul };
                        }
                    }
                    i += L;
                }
                let mut out = [[0f32; M]; R];
                for j in 0..R {
                    for r in 0..M {
                        let mut lanes = [0f32; L];
                        let ($sv, $sout) = (acc[j][r], &mut lanes);
                        unsafe { $store };
                        let tail: f32 = (full..k).map(|i| x[r * k + i] * w[j * k + i]).sum();
                        out[j][r] = lanes.iter().sum::<f32>() + tail;
                    }
                }
                out
            }

            /// Rows of `w` in groups of `R` against rows `r0..r0 + M` of `x`.
            $(#[$attr])*
            #[inline]
            fn rows_against<const R: usize, const M: usize>(
                x: &[f32],
                m: usize,
                r0: usize,
                w: &[f32],
                k: usize,
                out: &mut [f32],
            ) {
                let rows = w.len() / k;
                let xr = &x[r0 * k..(r0 + M) * k];
                let mut j = 0;
                while j + R <= rows {
                    let d = block::<R, M>(xr, &w[j * k..], k);
                    for (q, d) in d.iter().enumerate() {
                        for (r, v) in d.iter().enumerate() {
                            out[(j + q) * m + r0 + r] = *v;
                        }
                    }
                    j += R;
                }
                for j in j..rows {
                    let d = block::<1, M>(xr, &w[j * k..], k);
                    for (r, v) in d[0].iter().enumerate() {
                        out[j * m + r0 + r] = *v;
                    }
                }
            }

            /// `out[j·m + r] = x[r] · w[j]` for the rows `w` of one tile (`out` is `[rows, m]`):
            /// up to four activation rows at once, against `weight_rows` weight rows at a
            /// time (four with AVX-512's 32 registers: 1.4–2.3× one row at 8–32 activation
            /// rows; one elsewhere). Eight activation rows were slower.
            $(#[$attr])*
            pub fn tile_f32(x: &[f32], m: usize, w: &[f32], k: usize, out: &mut [f32]) {
                let mut r = 0;
                while r < m {
                    r += match m - r {
                        left if left >= 4 => {
                            rows_against::<$wr, 4>(x, m, r, w, k, out);
                            4
                        }
                        left if left >= 2 => {
                            rows_against::<1, 2>(x, m, r, w, k, out);
                            2
                        }
                        _ => {
                            rows_against::<1, 1>(x, m, r, w, k, out);
                            1
                        }
                    };
                }
            }

            /// `scores[j] = scale · q · keys[j]` for rows of `q.len()` values; `lanes`
            /// loads sixteen stored values as f32 lanes, `value` converts one.
            $(#[$attr])*
            #[inline]
            fn scores_of<E: Copy>(
                q: &[f32],
                keys: &[E],
                scale: f32,
                scores: &mut [f32],
                lanes: impl Fn(*const E) -> $v,
                value: impl Fn(E) -> f32,
            ) {
                let d = q.len();
                assert!(keys.len() >= scores.len() * d);
                let full = d / L * L;
                for (j, s) in scores.iter_mut().enumerate() {
                    let row = &keys[j * d..][..d];
                    let mut acc: $v = $zero;
                    for i in (0..full).step_by(L) {
                        // SAFETY: i + 16 ≤ d, inside `q` and `row`.
                        let $lp = unsafe { q.as_ptr().add(i) };
                        let qv: $v = unsafe { $load };
                        let kv = lanes(unsafe { row.as_ptr().add(i) });
                        let ($a, $x, $w) = (acc, qv, kv);
                        acc = unsafe { $add_mul };
                    }
                    let mut out = [0f32; L];
                    let ($sv, $sout) = (acc, &mut out);
                    unsafe { $store };
                    let tail: f32 = (full..d).map(|i| q[i] * value(row[i])).sum();
                    *s = (out.iter().sum::<f32>() + tail) * scale;
                }
            }

            /// `out = Σ_j p[j] · v[j]` over rows of `out.len()` values (`lanes`, `value`
            /// as in `scores_of`).
            $(#[$attr])*
            #[inline]
            fn weighted_sum_of<E: Copy>(
                p: &[f32],
                v: &[E],
                out: &mut [f32],
                lanes: impl Fn(*const E) -> $v,
                value: impl Fn(E) -> f32,
            ) {
                let d = out.len();
                assert!(v.len() >= p.len() * d);
                let full = d / L * L;
                for i in (0..full).step_by(L) {
                    let mut acc: $v = $zero;
                    for (j, &pj) in p.iter().enumerate() {
                        let $sp = pj;
                        let pv: $v = unsafe { $splat };
                        // SAFETY: row j's lanes i..i + 16 are inside `v` (asserted).
                        let vv = lanes(unsafe { v.as_ptr().add(j * d + i) });
                        let ($a, $x, $w) = (acc, pv, vv);
                        acc = unsafe { $add_mul };
                    }
                    let lanes_out: &mut [f32; L] = (&mut out[i..i + L]).try_into().unwrap();
                    let ($sv, $sout) = (acc, lanes_out);
                    unsafe { $store };
                }
                for i in full..d {
                    out[i] = p
                        .iter()
                        .enumerate()
                        .fold(0.0, |s, (j, &pj)| s + pj * value(v[j * d + i]));
                }
            }

            $(#[$attr])*
            pub fn scores(q: &[f32], keys: &[f32], scale: f32, out: &mut [f32]) {
                scores_of(q, keys, scale, out, |$lp| unsafe { $load }, |x| x)
            }

            $(#[$attr])*
            pub fn scores_f16(q: &[f32], keys: &[half::f16], scale: f32, out: &mut [f32]) {
                scores_of(q, keys, scale, out, |$hp| unsafe { $load_f16 }, |x| x.to_f32())
            }

            $(#[$attr])*
            pub fn weighted_sum(p: &[f32], v: &[f32], out: &mut [f32]) {
                weighted_sum_of(p, v, out, |$lp| unsafe { $load }, |x| x)
            }

            $(#[$attr])*
            pub fn weighted_sum_f16(p: &[f32], v: &[half::f16], out: &mut [f32]) {
                weighted_sum_of(p, v, out, |$hp| unsafe { $load_f16 }, |x| x.to_f32())
            }
        }
    };
}

f32_kernels!(
    scalar, [], [f32; 16],
    weight_rows: 1,
    zero: [0f32; 16],
    load: |p| *(p as *const [f32; 16]),
    load_f16: |p| std::array::from_fn(|l| (*p.add(l)).to_f32()),
    splat: |s| [s; 16],
    add_mul: |a, x, w| std::array::from_fn(|l| a[l] + x[l] * w[l]),
    store: |v, out| *out = v,
);

#[cfg(target_arch = "x86_64")]
f32_kernels!(
    avx512, [target_feature(enable = "avx512f")], __m512,
    weight_rows: 4,
    zero: _mm512_setzero_ps(),
    load: |p| _mm512_loadu_ps(p),
    load_f16: |p| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
    splat: |s| _mm512_set1_ps(s),
    add_mul: |a, x, w| _mm512_add_ps(a, _mm512_mul_ps(x, w)),
    store: |v, out| _mm512_storeu_ps(out.as_mut_ptr(), v),
);

#[cfg(target_arch = "x86_64")]
f32_kernels!(
    avx2, [target_feature(enable = "avx2,fma,f16c")], (__m256, __m256),
    weight_rows: 1,
    zero: (_mm256_setzero_ps(), _mm256_setzero_ps()),
    load: |p| (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))),
    load_f16: |p| (
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i))
    ),
    splat: |s| (_mm256_set1_ps(s), _mm256_set1_ps(s)),
    add_mul: |a, x, w| (
        _mm256_add_ps(a.0, _mm256_mul_ps(x.0, w.0)),
        _mm256_add_ps(a.1, _mm256_mul_ps(x.1, w.1))
    ),
    store: |v, out| {
        _mm256_storeu_ps(out.as_mut_ptr(), v.0);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), v.1);
    },
);

/// Picks the kernel compiled for this CPU: `pick!(scores(args))` calls `avx512::scores`,
/// `avx2::scores` or `scalar::scores`.
macro_rules! pick {
    ($f:ident($($arg:expr),*)) => {
        match level() {
            // SAFETY: `level` checked that the CPU has the features these were compiled for.
            #[cfg(target_arch = "x86_64")]
            l if l.has_avx512() => unsafe { avx512::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { avx2::$f($($arg),*) },
            _ => scalar::$f($($arg),*),
        }
    };
}

fn tile_f32(x: &[f32], m: usize, w: &[f32], k: usize, out: &mut [f32]) {
    pick!(tile_f32(x, m, w, k, out))
}

/// How a KV cache stores keys and values: f32, or f16 widened in registers as it is read.
pub trait KvValue: Copy + Send + Sync {
    /// `out[j] = scale · q · keys[j]` for rows of `q.len()` values.
    fn scores(q: &[f32], keys: &[Self], scale: f32, out: &mut [f32]);
    /// `out = Σ_j p[j] · v[j]` over rows of `out.len()` values.
    fn weighted_sum(p: &[f32], v: &[Self], out: &mut [f32]);
}

impl KvValue for f32 {
    fn scores(q: &[f32], keys: &[f32], scale: f32, out: &mut [f32]) {
        pick!(scores(q, keys, scale, out))
    }
    fn weighted_sum(p: &[f32], v: &[f32], out: &mut [f32]) {
        pick!(weighted_sum(p, v, out))
    }
}

impl KvValue for half::f16 {
    fn scores(q: &[f32], keys: &[half::f16], scale: f32, out: &mut [f32]) {
        pick!(scores_f16(q, keys, scale, out))
    }
    fn weighted_sum(p: &[f32], v: &[half::f16], out: &mut [f32]) {
        pick!(weighted_sum_f16(p, v, out))
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
    let mut y = with_bias(m, n, bias);
    gemm_into(&mut y, n, x, m, w, k);
    y
}

/// `y [m, n]` holding `bias` in every row, or zeros.
fn with_bias(m: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    match bias {
        Some(b) => b.repeat(m),
        None => vec![0f32; m * n],
    }
}

/// `y[r·stride + j] += x[r] · w[j]` for the `m` rows of `x [m, k]` and the rows of `w`.
fn gemm_into(y: &mut [f32], stride: usize, x: &[f32], m: usize, w: &[f32], k: usize) {
    let n = w.len() / k;
    assert!(x.len() == m * k && m > 0 && y.len() >= (m - 1) * stride + n && n <= stride);
    // SAFETY: y is [m, n] with row stride `stride` (asserted to fit), x [m, k] row-major,
    // and w [n, k] row-major read as its transpose [k, n] through the strides; every
    // index stays inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            stride as isize,
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
}

/// Bytes of weights dequantized at a time by [`gemm_q8`]: a band that stays in L2.
const BAND_BYTES: usize = 4 << 20;

/// `y [m, n] = x [m, k] · w [n, k]ᵀ + bias` for Q8_0 weights and many rows `m` (prefill,
/// bound by arithmetic, not by reading weights): each band of weight rows is dequantized
/// into one buffer that stays in cache, then multiplied with f32 gemm. The f32 weights
/// are never whole in memory.
pub fn gemm_q8(x: &[f32], m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    assert!(x.len() == m * k, "gemm q8: x [{m}, ?] · w [{n}, {k}]ᵀ");
    let mut y = with_bias(m, n, bias);
    let band_rows = (BAND_BYTES / (4 * k)).clamp(16, n.max(16));
    let mut band = vec![0f32; band_rows.min(n) * k];
    for j0 in (0..n).step_by(band_rows) {
        let rows = band_rows.min(n - j0);
        let band = &mut band[..rows * k];
        band.par_chunks_mut(k)
            .enumerate()
            .for_each(|(j, row)| w.dequantize_row_into(j0 + j, row));
        gemm_into(&mut y[j0..], n, x, m, band, k);
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

    /// One weight row against `M` activation rows (`xq` is `[M, k]`, `xs` `[M, k/32]`),
    /// each block of the weights loaded once. Each block: `|x| · (w · sign x)` as unsigned
    /// × signed bytes into i32 lanes, then scaled and added in f32. `dot` is the byte
    /// product instruction.
    macro_rules! dot_q8 {
        ($name:ident, $features:literal, |$ax:ident, $sw:ident| $dot:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const M: usize>(
                xq: &[i8],
                xs: &[f32],
                wq: &[i8],
                ws: &[f32],
            ) -> [f32; M] {
                let blocks = ws.len();
                let k = blocks * Q8_BLOCK;
                assert!(xq.len() >= M * k && xs.len() >= M * blocks && wq.len() >= k);
                // Two chains per row (even and odd blocks), named rather than indexed by
                // `b & 1`, so that they stay in registers.
                let mut even = [_mm256_setzero_ps(); M];
                let mut odd = [_mm256_setzero_ps(); M];
                let block = |b: usize, acc: &mut [__m256; M]| {
                    let w = _mm256_loadu_si256(wq.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
                    let dw = *ws.get_unchecked(b);
                    for r in 0..M {
                        let at = r * k + b * Q8_BLOCK;
                        let x = _mm256_loadu_si256(xq.as_ptr().add(at) as *const __m256i);
                        let $ax = _mm256_sign_epi8(x, x);
                        let $sw = _mm256_sign_epi8(w, x);
                        let dot: __m256i = $dot;
                        let d = _mm256_set1_ps(*xs.get_unchecked(r * blocks + b) * dw);
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[r]);
                    }
                };
                let mut b = 0;
                while b + 2 <= blocks {
                    block(b, &mut even);
                    block(b + 1, &mut odd);
                    b += 2;
                }
                if b < blocks {
                    block(b, &mut even);
                }
                std::array::from_fn(|r| hsum(_mm256_add_ps(even[r], odd[r])))
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

/// One weight row (`wq`, `ws`) against `M` activation rows (`xq [M, k]`, `xs [M, k/32]`).
fn dot_q8<const M: usize>(xq: &[i8], xs: &[f32], wq: &[i8], ws: &[f32]) -> [f32; M] {
    match level() {
        // SAFETY: `level` checked the features; the kernels check the slices' lengths.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => unsafe { x86::dot_q8_vnni::<M>(xq, xs, wq, ws) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx2 => unsafe { x86::dot_q8_avx2::<M>(xq, xs, wq, ws) },
        _ => {
            let (k, kb) = (wq.len(), ws.len());
            std::array::from_fn(|r| dot_q8_scalar(&xq[r * k..][..k], &xs[r * kb..][..kb], wq, ws))
        }
    }
}

/// Rows `r0..r0 + M` of `x` against the weight rows `j0..j0 + rows` into `out [rows, m]`.
fn rows_q8<const M: usize>(
    x: &Q8Rows,
    m: usize,
    r0: usize,
    w: &Q8Matrix,
    j0: usize,
    out: &mut [f32],
) {
    let (k, kb) = (w.k, w.k / Q8_BLOCK);
    let (xq, xs) = (
        &x.qs[r0 * k..(r0 + M) * k],
        &x.scales[r0 * kb..(r0 + M) * kb],
    );
    for j in 0..out.len() / m {
        let row = j0 + j;
        let (wq, ws) = (&w.qs[row * k..][..k], &w.scales[row * kb..][..kb]);
        let d = dot_q8::<M>(xq, xs, wq, ws);
        out[j * m + r0..j * m + r0 + M].copy_from_slice(&d);
    }
}

/// `y [m, n] = x · w [n, k]ᵀ + bias` for activations `x` already quantized: each weight
/// row against up to four activation rows at once.
pub fn gemv_q8(x: &Q8Rows, m: usize, w: &Q8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    assert!(x.qs.len() == m * k, "gemv q8: x [{m}, ?] · w [{n}, {k}]ᵀ");
    by_tiles(m, n, bias, |j0, out| {
        let mut r = 0;
        while r < m {
            r += match m - r {
                left if left >= 4 => {
                    rows_q8::<4>(x, m, r, w, j0, out);
                    4
                }
                left if left >= 2 => {
                    rows_q8::<2>(x, m, r, w, j0, out);
                    2
                }
                _ => {
                    rows_q8::<1>(x, m, r, w, j0, out);
                    1
                }
            };
        }
    })
}

// ---- attention over a cache ---------------------------------------------------------------

/// One head of one new token: `softmax(scale · q · Kᵀ) · V` over `keys`/`values`
/// (`[t, d]` each), into `out [d]`; `buf` is scratch of at least `t` values.
pub fn attend<E: KvValue>(
    q: &[f32],
    keys: &[E],
    values: &[E],
    scale: f32,
    buf: &mut Vec<f32>,
    out: &mut [f32],
) {
    let t = keys.len() / q.len();
    buf.resize(t, 0.0);
    let s = &mut buf[..t];
    E::scores(q, keys, scale, s);
    let max = simd::max(s);
    let total = simd::sum_exp(s, max);
    simd::scaled_exp(s, max, (1.0 / total) as f32);
    E::weighted_sum(s, values, out);
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
    fn every_instruction_set_gives_the_scalar_bits() {
        let (n, k, d) = (13, 100, 80); // tails after the 16-lane chunks
        let w = data(n * k, 3);
        let (p, v) = (data(n, 4), data(n * d, 6));
        for m in [1, 2, 3, 5] {
            let x = data(m * k, m);
            let mut want = vec![0f32; n * m];
            scalar::tile_f32(&x, m, &w, k, &mut want);
            let mut got = vec![0f32; n * m];
            tile_f32(&x, m, &w, k, &mut got);
            assert_eq!(got, want, "tile, m {m}, {}", kernel_level());
        }
        // Attention, on f32 and on f16 values (widened in registers): the scalar bits, and
        // f16 the same as f32 on the same values widened first.
        let (q, keys) = (data(20, 8), data(n * 20, 9));
        let half =
            |v: &[f32]| -> Vec<half::f16> { v.iter().map(|&x| half::f16::from_f32(x)).collect() };
        let widen = |v: &[half::f16]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let (keys_h, v_h) = (half(&keys), half(&v));
        let (keys_w, v_w) = (widen(&keys_h), widen(&v_h));
        let mut want = vec![0f32; n];
        scalar::scores(&q, &keys, 0.5, &mut want);
        let mut want_h = vec![0f32; n];
        scalar::scores(&q, &keys_w, 0.5, &mut want_h);
        let (mut got, mut got_h, mut got_hs) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        f32::scores(&q, &keys, 0.5, &mut got);
        half::f16::scores(&q, &keys_h, 0.5, &mut got_h);
        scalar::scores_f16(&q, &keys_h, 0.5, &mut got_hs);
        assert_eq!(got, want, "scores");
        assert_eq!(got_h, want_h, "f16 scores");
        assert_eq!(got_hs, want_h, "scalar f16 scores");
        let mut want = vec![0f32; d];
        scalar::weighted_sum(&p, &v, &mut want);
        let mut want_h = vec![0f32; d];
        scalar::weighted_sum(&p, &v_w, &mut want_h);
        let (mut got, mut got_h, mut got_hs) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
        f32::weighted_sum(&p, &v, &mut got);
        half::f16::weighted_sum(&p, &v_h, &mut got_h);
        scalar::weighted_sum_f16(&p, &v_h, &mut got_hs);
        assert_eq!(got, want, "weighted sum");
        assert_eq!(got_h, want_h, "f16 weighted sum");
        assert_eq!(got_hs, want_h, "scalar f16 weighted sum");
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            let x = data(3 * k, 1);
            let (mut want, mut got) = (vec![0f32; n * 3], vec![0f32; n * 3]);
            scalar::tile_f32(&x, 3, &w, k, &mut want);
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
            unsafe { avx2::tile_f32(&x, 3, &w, k, &mut got) };
            assert_eq!(got, want, "avx2 tile");
            let (q, keys_h) = (data(20, 8), half(&data(n * 20, 9)));
            let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
            scalar::scores_f16(&q, &keys_h, 0.5, &mut want);
            // SAFETY: as above.
            unsafe { avx2::scores_f16(&q, &keys_h, 0.5, &mut got) };
            assert_eq!(got, want, "avx2 f16 scores");
        }
    }

    #[test]
    fn banded_int8_gemm_equals_gemm_of_the_dequantized_weights() {
        let (n, k, m) = (700, 2048, 5); // bands of 128 rows, the last one partial
        let w = Q8Matrix::quantize(&data(n * k, 2), n, k);
        let (x, bias) = (data(m * k, 7), data(n, 5));
        let want = gemm_f32(&x, m, &w.dequantize(), n, k, Some(&bias));
        let got = gemm_q8(&x, m, &w, Some(&bias));
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "{g} vs {e}");
        }
    }

    #[test]
    fn int8_products_match_the_integer_reference() {
        let (n, k) = (21, 128);
        let w = Q8Matrix::quantize(&data(n * k, 1), n, k);
        for m in [1, 3, 4, 7] {
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

    /// Each int8 kernel this CPU can run, at every activation-row count `gemv_q8` uses,
    /// against the scalar dot product.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_int8_kernel_matches_the_scalar_dot() {
        type Kernel<const M: usize> = unsafe fn(&[i8], &[f32], &[i8], &[f32]) -> [f32; M];
        fn check<const M: usize>(kernel: Kernel<M>) {
            let k = 96;
            let kb = k / Q8_BLOCK;
            let w = Q8Matrix::quantize(&data(k, 3), 1, k);
            let x = quantize_rows(&data(M * k, 5));
            // SAFETY: the caller checked the CPU's features.
            let got = unsafe { kernel(&x.qs, &x.scales, &w.qs, &w.scales) };
            for (r, g) in got.iter().enumerate() {
                let (xq, xs) = (&x.qs[r * k..][..k], &x.scales[r * kb..][..kb]);
                let want = dot_q8_scalar(xq, xs, &w.qs, &w.scales);
                assert!(
                    (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            check::<1>(x86::dot_q8_avx2::<1>);
            check::<2>(x86::dot_q8_avx2::<2>);
            check::<4>(x86::dot_q8_avx2::<4>);
        }
        if level() == Level::Avx512Vnni {
            check::<1>(x86::dot_q8_vnni::<1>);
            check::<2>(x86::dot_q8_vnni::<2>);
            check::<4>(x86::dot_q8_vnni::<4>);
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
