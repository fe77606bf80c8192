//! The CPU backends compute correct matmuls (the operation that dominates GPT-2), checked
//! against a plain f64 triple loop. With `x86-v4`, gemm picks AVX-512 kernels at run time on
//! CPUs that have them; this test runs whichever kernel the CPU selects.

use burn::backend::{Flex, NdArray};
use burn::tensor::{backend::Backend, Distribution, ElementConversion, Tensor};

fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p] as f64;
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j] as f64;
            }
        }
    }
    c
}

fn check_matmul<B: Backend>(device: &B::Device) {
    B::seed(device, 7);
    for &(m, k, n) in &[(1, 1, 1), (67, 129, 35), (256, 256, 256), (128, 768, 96)] {
        let a = Tensor::<B, 2>::random([m, k], Distribution::Uniform(-1.0, 1.0), device);
        let b = Tensor::<B, 2>::random([k, n], Distribution::Uniform(-1.0, 1.0), device);
        let got: Vec<f32> = a
            .clone()
            .matmul(b.clone())
            .into_data()
            .iter::<f32>()
            .collect();
        let a: Vec<f32> = a.into_data().iter::<f32>().collect();
        let b: Vec<f32> = b.into_data().iter::<f32>().collect();
        let want = naive(&a, &b, m, k, n);
        let max_err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        // f32 accumulation over k terms of size ≤ 1: error grows like sqrt(k)·eps·k at worst.
        assert!(
            max_err < 1e-3,
            "{}: {m}x{k}x{n} max error {max_err}",
            B::name(device)
        );
    }
}

fn check_batched<B: Backend>(device: &B::Device) {
    let a = Tensor::<B, 3>::random([3, 5, 7], Distribution::Default, device);
    let b = Tensor::<B, 3>::random([3, 7, 4], Distribution::Default, device);
    let c = a.clone().matmul(b.clone());
    assert_eq!(c.dims(), [3, 5, 4]);
    for i in 0..3 {
        let ai = a.clone().narrow(0, i, 1).reshape([5, 7]);
        let bi = b.clone().narrow(0, i, 1).reshape([7, 4]);
        let ci = c.clone().narrow(0, i, 1).reshape([5, 4]);
        let diff: f32 = (ai.matmul(bi) - ci).abs().max().into_scalar().elem();
        assert!(diff < 1e-5, "batch {i}: {diff}");
    }
}

#[test]
fn flex_matmul_is_correct() {
    check_matmul::<Flex>(&Default::default());
    check_batched::<Flex>(&Default::default());
}

#[test]
fn ndarray_matmul_is_correct() {
    check_matmul::<NdArray>(&Default::default());
    check_batched::<NdArray>(&Default::default());
}
