//! Square f32 matmul throughput (GFLOP/s) on the CPU backends, to choose the default.
//!
//! `cargo bench -p llm-model --bench matmul`. Criterion reports "elem/s": with 2·n³ elements
//! per matmul, that is FLOP/s.

use burn::backend::{Flex, NdArray};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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

criterion_group!(benches, matmul);
criterion_main!(benches);
