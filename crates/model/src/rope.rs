//! Rotary position embeddings (RoFormer; Llama's layout): each head's queries and keys are
//! turned, pair by pair, by an angle proportional to the token's position, so that `q·k`
//! depends on how far apart two tokens are, not where they are.
//!
//! Dimension `i` is paired with `i + head_dim/2` (Hugging Face's `rotate_half`, not the
//! interleaved pairs of the original paper), and pair `i` turns by
//! `pos · θ^(−2i/head_dim)`.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// The cosines and sines of the rotation at a run of positions, `[1, 1, t, head_dim]` each.
#[derive(Clone, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// The rotations of `positions` for heads of `head_dim` (even) and base `theta`.
    ///
    /// The angles are computed as transformers computes them, in f32 (`inv_freq`, then
    /// `pos · inv_freq`), so that long positions round the same way; cos and sin in f64.
    pub fn new(theta: f64, head_dim: usize, positions: Range<usize>, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let t = positions.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(t * head_dim),
            Vec::with_capacity(t * head_dim),
        );
        for pos in positions {
            for j in 0..head_dim {
                let angle = (pos as f32 * inv_freq[j % half]) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table =
            |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, t, head_dim]), device);
        Rope {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// Turns `x` `[b, heads, t, head_dim]` by the rotation of each of its `t` positions.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        x.clone() * self.cos.clone() + rotate_half(x) * self.sin.clone()
    }

    /// The rotations of `positions` (indices into this table's run), one per row, laid out
    /// `[1, n, 1, head_dim]` so that [`Rope::apply`] turns `[1, n, heads, head_dim]`: the
    /// engine's rows each have their own position. Pick them once per forward, not per layer.
    pub fn rows(&self, positions: Tensor<B, 1, Int>) -> Self {
        let [_, _, t, d] = self.cos.dims();
        let n = positions.dims()[0];
        let pick = |table: &Tensor<B, 4>| {
            (table.clone().reshape([t, d]))
                .select(0, positions.clone())
                .reshape([1, n, 1, d]) // [1, n, 1, d]
        };
        Rope {
            cos: pick(&self.cos),
            sin: pick(&self.sin),
        }
    }
}

/// `[…, x1 | x2]` → `[…, −x2 | x1]` along the last dimension (transformers' `rotate_half`).
fn rotate_half<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    let x1 = x.clone().narrow(D - 1, 0, d / 2); // [..., d/2]
    let x2 = x.narrow(D - 1, d / 2, d / 2); // [..., d/2]
    Tensor::cat(vec![x2.neg(), x1], D - 1) // [..., d]
}
