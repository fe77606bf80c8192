//! Choosing one token from GPT-2's 50,257 logits, per sampling setting: the engine does
//! this once per sequence per step, on one thread, between forward passes.
//!
//! `cargo bench -p llm-model --bench sampling`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use llm_model::sampling::{SamplingParams, TokenSampler};

const VOCAB: usize = 50_257;

fn logits() -> Vec<f32> {
    // A spread like a trained model's: a few large values over a low floor.
    (0..VOCAB)
        .map(|i| ((i * 7919) % 10_007) as f32 / 1000.0 - 5.0 + if i % 997 == 0 { 8.0 } else { 0.0 })
        .collect()
}

fn choose(c: &mut Criterion) {
    let logits = logits();
    let base = SamplingParams {
        max_new_tokens: usize::MAX,
        ..Default::default()
    };
    let settings = [
        (
            "greedy",
            SamplingParams {
                temperature: 0.0,
                ..base.clone()
            },
        ),
        (
            "temperature",
            SamplingParams {
                temperature: 0.8,
                ..base.clone()
            },
        ),
        (
            "top_p",
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                ..base.clone()
            },
        ),
        (
            "top_k",
            SamplingParams {
                temperature: 0.8,
                top_k: Some(40),
                ..base.clone()
            },
        ),
        (
            "logprobs",
            SamplingParams {
                temperature: 0.8,
                top_logprobs: 5,
                ..base.clone()
            },
        ),
    ];
    let mut g = c.benchmark_group("choose");
    for (name, params) in settings {
        let mut sampler = TokenSampler::new(params, &[], VOCAB);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| sampler.choose(&logits))
        });
    }
    g.finish();
}

criterion_group!(benches, choose);
criterion_main!(benches);
