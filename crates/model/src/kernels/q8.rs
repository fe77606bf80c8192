//! int8 weights in llama.cpp's Q8_0 scheme: each row of a `[n, k]` matrix (one row per
//! output, `k` along the reduction) is cut into blocks of [`Q8_BLOCK`] values that share
//! one scale, `d = max|w| / 127`, and store `round(w / d)` in `[-127, 127]`.
//!
//! Activations are quantized the same way for each step ([`quantize_rows`]), so a dot
//! product is `Σ_blocks d_w · d_x · Σ_i w_i · x_i`, the inner sum in integers.

/// Values per block along the reduction dimension.
pub const Q8_BLOCK: usize = 32;

/// A `[n, k]` matrix in Q8_0: `qs[j·k + i]` and one `scales[j·k/32 + b]` per block.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Matrix {
    /// Rows: outputs.
    pub n: usize,
    /// Columns: the reduction dimension, a multiple of [`Q8_BLOCK`].
    pub k: usize,
    /// `[n, k]` quantized values.
    pub qs: Vec<i8>,
    /// `[n, k / 32]` block scales.
    pub scales: Vec<f32>,
}

impl Q8Matrix {
    /// Quantizes `w`, `[n, k]` row-major. `k` must be a multiple of [`Q8_BLOCK`].
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert!(
            k.is_multiple_of(Q8_BLOCK) && w.len() == n * k,
            "Q8_0: [{n}, {k}] needs k a multiple of {Q8_BLOCK} and {} values, got {}",
            n * k,
            w.len()
        );
        let mut qs = vec![0i8; n * k];
        let mut scales = vec![0f32; n * k / Q8_BLOCK];
        quantize_into(w, &mut qs, &mut scales);
        Q8Matrix { n, k, qs, scales }
    }

    /// Builds one from stored parts, checking their sizes.
    pub fn from_parts(n: usize, k: usize, qs: Vec<i8>, scales: Vec<f32>) -> Result<Self, String> {
        if !k.is_multiple_of(Q8_BLOCK) || qs.len() != n * k || scales.len() != n * k / Q8_BLOCK {
            return Err(format!(
                "a Q8_0 [{n}, {k}] matrix needs k a multiple of {Q8_BLOCK}, {} values and {} scales; got {} and {}",
                n * k,
                n * k / Q8_BLOCK,
                qs.len(),
                scales.len()
            ));
        }
        Ok(Q8Matrix { n, k, qs, scales })
    }

    /// Back to f32, `[n, k]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (row, j) in out.chunks_mut(self.k).zip(0..self.n) {
            self.dequantize_row_into(j, row);
        }
        out
    }

    /// Row `j` in f32 into `out` (`k` values): an embedding lookup.
    pub fn dequantize_row_into(&self, j: usize, out: &mut [f32]) {
        let q = &self.qs[j * self.k..(j + 1) * self.k];
        let s = &self.scales[j * self.k / Q8_BLOCK..(j + 1) * self.k / Q8_BLOCK];
        for ((o, q), d) in out.chunks_mut(Q8_BLOCK).zip(q.chunks(Q8_BLOCK)).zip(s) {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = q as f32 * d;
            }
        }
    }

    /// Bytes held: values and scales.
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * self.scales.len()
    }
}

/// Quantizes rows of `Q8_BLOCK`-sized blocks: `x.len() == qs.len() == 32 · scales.len()`.
/// Values round to the nearest step, ties to even.
pub fn quantize_into(x: &[f32], qs: &mut [i8], scales: &mut [f32]) {
    // Adding and taking away 1.5 · 2^23 rounds |v| < 2^22 to an integer, ties to even:
    // branch-free, so the loop vectorises (`f32::round` is a libm call per value).
    const ROUND: f32 = 12_582_912.0;
    for ((x, q), d) in x
        .chunks(Q8_BLOCK)
        .zip(qs.chunks_mut(Q8_BLOCK))
        .zip(scales.iter_mut())
    {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in q.iter_mut().zip(x) {
            *q = ((v * inv + ROUND) - ROUND) as i32 as i8;
        }
    }
}

/// Activation rows `[m, k]` quantized for [`Q8Matrix`] dot products.
pub struct Q8Rows {
    pub qs: Vec<i8>,
    pub scales: Vec<f32>,
}

/// Quantizes `x`, `[m, k]` row-major (`k` a multiple of 32).
pub fn quantize_rows(x: &[f32]) -> Q8Rows {
    let mut qs = vec![0i8; x.len()];
    let mut scales = vec![0f32; x.len() / Q8_BLOCK];
    quantize_into(x, &mut qs, &mut scales);
    Q8Rows { qs, scales }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        let (n, k) = (3, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let q = Q8Matrix::quantize(&w, n, k);
        assert_eq!(q.bytes(), n * k + 4 * n * 2);
        let back = q.dequantize();
        for (b, (x, y)) in w.chunks(Q8_BLOCK).zip(back.chunks(Q8_BLOCK)).enumerate() {
            let step = q.scales[b];
            for (a, c) in x.iter().zip(y) {
                assert!((a - c).abs() <= 0.5 * step + 1e-7, "{a} vs {c}");
            }
        }
        assert!(Q8Matrix::from_parts(2, 48, vec![0; 96], vec![0.0; 3]).is_err());
        // An all-zero block stays zero (no division by zero).
        let z = Q8Matrix::quantize(&[0.0; 32], 1, 32);
        assert_eq!(z.dequantize(), vec![0.0; 32]);
    }
}
