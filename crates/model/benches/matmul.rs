//! f32 matmul throughput (GFLOP/s) on the CPU, to choose kernels:
//! - `matmul`: square matmuls on each CPU backend, to choose the default;
//! - `linear_rows`: a GPT-2 124M MLP layer (`[m, 768] · [3072, 768]ᵀ` and back) for the
//!   few rows `m` of batched decode, with the weight-streaming kernel (`gemv`) and with
//!   gemm, to choose where Flex's `linear_nt` switches from one to the other;
//! - `lm_head_vocab`: the tied LM head's three training matmuls (`h · wteᵀ`, `g · wte`,
//!   `gᵀ · h`) at 512 tokens, with GPT-2's 50,257 columns and nanoGPT's padded 50,304, to
//!   see whether padding the vocabulary pays on the CPU.
//!
//! `cargo bench -p llm-model --bench matmul`. Criterion reports "elem/s": with 2·m·n·k
//! elements per product, that is FLOP/s.

use burn::backend::{Flex, NdArray};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llm_model::kernels::gemv;

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str) {
    let device = B::Device::default();
    let mut g = c.benchmark_group("matmul");
    for n in [256usize, 768, 1024] {
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        g.sample_size(20);
        g.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
            bench.iter(|| {
                let c = a.clone().matmul(b.clone());
                B::sync(&device).unwrap();
                c
            })
        });
    }
    g.finish();
}

fn matmul(c: &mut Criterion) {
    bench_backend::<Flex>(c, "flex");
    bench_backend::<NdArray>(c, "ndarray");
}

fn linear_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_rows");
    g.sample_size(20);
    let values = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    for (name, n, k) in [("c_fc", 3072usize, 768usize), ("c_proj", 768, 3072)] {
        let w = values(n * k, 1);
        for m in [1usize, 4, 8, 16, 32, 64] {
            let x = values(m * k, 2);
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            g.bench_function(BenchmarkId::new(format!("{name}/gemv"), m), |b| {
                b.iter(|| gemv::gemv_f32(&x, m, &w, n, k, None))
            });
            g.bench_function(BenchmarkId::new(format!("{name}/gemm"), m), |b| {
                b.iter(|| gemv::gemm_f32(&x, m, &w, n, k, None))
            });
        }
    }
    g.finish();
}

fn lm_head_vocab(c: &mut Criterion) {
    type B = burn::backend::Flex;
    let device = Default::default();
    let (n, d) = (512usize, 768usize);
    let mut g = c.benchmark_group("lm_head_vocab");
    g.sample_size(10);
    for vocab in [50_257usize, 50_304] {
        let h = Tensor::<B, 2>::random([n, d], Distribution::Default, &device); // [n, d]
        let wte = Tensor::<B, 2>::random([vocab, d], Distribution::Default, &device); // [vocab, d]
        let grad = Tensor::<B, 2>::random([n, vocab], Distribution::Default, &device); // [n, vocab]
        g.throughput(Throughput::Elements(3 * 2 * (n * d * vocab) as u64));
        g.bench_with_input(
            BenchmarkId::new("forward+backward", vocab),
            &vocab,
            |bench, _| {
                bench.iter(|| {
                    let logits = h.clone().matmul(wte.clone().transpose()); // [n, vocab]
                    let dh = grad.clone().matmul(wte.clone()); // [n, d]
                    let dwte = grad.clone().transpose().matmul(h.clone()); // [vocab, d]
                    B::sync(&device).unwrap();
                    (logits, dh, dwte)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, matmul, linear_rows, lm_head_vocab);
criterion_main!(benches);
