//! Dropout masks ([`KernelBackend::dropout_mask`]).
//!
//! Burn draws a mask element by element from the backend's ChaCha RNG on one thread, about
//! 15 cycles an element. Flex instead draws one seed from that RNG and hashes each
//! element's index with it (SplitMix64's output function, the generator's own
//! `mix(seed + i·γ)`), in parallel: the same mask whatever the thread count, and as
//! reproducible as before, since the seed comes from the seeded RNG.
//!
//! [`KernelBackend::dropout_mask`]: super::KernelBackend::dropout_mask

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Distribution, FloatDType, IntDType, Scalar, Shape};

/// The generic default: Burn's Bernoulli draw, scaled by `1 / keep`.
pub(super) fn mask_default<B: Backend>(
    shape: Shape,
    keep: f64,
    device: &B::Device,
    dtype: FloatDType,
) -> FloatTensor<B> {
    let kept = B::float_random(shape, Distribution::Bernoulli(keep), device, dtype);
    B::float_mul_scalar(kept, Scalar::Float(1.0 / keep))
}

/// One 53-bit seed from the backend's RNG (so `Backend::seed` still decides the masks).
/// It reads the seed back to the host: for CPU backends only.
pub(super) fn draw_seed<B: Backend>(device: &B::Device) -> u64 {
    let seed: IntTensor<B> = B::int_random(
        Shape::new([1]),
        Distribution::Uniform(0.0, (1u64 << 53) as f64),
        device,
        IntDType::I64,
    );
    let data = burn::tensor::read_sync(B::int_into_data(seed)).expect("a seed on the host");
    let seed = data.iter::<i64>().next().expect("one seed");
    seed as u64
}

/// SplitMix64's increment (`γ`, the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Element `i` of the stream `seed`: 64 well-mixed bits.
#[inline(always)]
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out`, elements `first..first + out.len()` of the mask: `scale` where the top 32
/// bits of [`mix`] fall below `threshold` (`keep · 2³²`), else 0.
pub(super) fn fill(out: &mut [f32], seed: u64, first: u64, threshold: u64, scale: f32) {
    for (j, x) in out.iter_mut().enumerate() {
        let kept = (mix(seed, first + j as u64) >> 32) < threshold;
        *x = if kept { scale } else { 0.0 };
    }
}

/// `keep · 2³²`: the bound of [`fill`]'s test (every element kept at `keep = 1`).
pub(super) fn threshold(keep: f64) -> u64 {
    (keep * (1u64 << 32) as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_share_is_keep_and_the_scale_is_one_over_keep() {
        for keep in [0.9, 0.5, 0.1] {
            let mut out = vec![0f32; 200_000];
            let scale = (1.0 / keep) as f32;
            fill(&mut out, 12345, 0, threshold(keep), scale);
            let kept = out.iter().filter(|&&x| x != 0.0).count() as f64 / out.len() as f64;
            // Binomial standard deviation at 200k draws is below 0.0012.
            assert!((kept - keep).abs() < 0.005, "keep {keep}: kept {kept}");
            assert!(out.iter().all(|&x| x == 0.0 || x == scale));
            let mean = out.iter().map(|&x| x as f64).sum::<f64>() / out.len() as f64;
            assert!((mean - 1.0).abs() < 0.02, "keep {keep}: mean {mean}");
        }
    }

    #[test]
    fn a_chunk_is_the_same_elements_of_one_stream() {
        let (t, s) = (threshold(0.5), 2.0);
        let mut whole = vec![0f32; 1000];
        fill(&mut whole, 7, 0, t, s);
        let mut part = vec![0f32; 300];
        fill(&mut part, 7, 500, t, s);
        assert_eq!(part, whole[500..800]);
        let mut other = vec![0f32; 1000];
        fill(&mut other, 8, 0, t, s);
        assert_ne!(other, whole, "another seed, another mask");
    }
}
