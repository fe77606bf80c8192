//! GPT-2's initialisation, dropout only in training, and the untied head.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{backend::Backend, Tensor};
use llm_model::weights::save_hf_dir;
use llm_model::{pretrained, Gpt, Gpt2Config};

type B = Flex;

fn stats<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> (f64, f64) {
    let v: Vec<f64> = t.into_data().iter::<f32>().map(f64::from).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

#[test]
fn gpt2_initialisation() {
    let config = Gpt2Config {
        n_layer: 8,
        ..Gpt2Config::small()
    };
    let model: Gpt<B> = config.init(&Default::default()).unwrap();
    let close =
        |(mean, std): (f64, f64), want: f64| mean.abs() < 2e-3 && (std / want - 1.0).abs() < 0.05;
    assert!(close(stats(model.wte.weight.val()), 0.02));
    assert!(close(stats(model.wpe.as_ref().unwrap().weight.val()), 0.02));
    let block = &model.h[3];
    let mlp = block.mlp.as_ref().unwrap();
    assert!(close(stats(block.attn.c_attn.weight.val()), 0.02));
    assert!(close(stats(mlp.c_fc.weight.val()), 0.02));
    // Residual projections: 0.02 / √(2 · n_layer).
    let proj = 0.02 / (2.0f64 * 8.0).sqrt();
    assert!(
        close(stats(block.attn.c_proj.weight.val()), proj),
        "{:?}",
        stats(block.attn.c_proj.weight.val())
    );
    assert!(close(stats(mlp.c_proj.weight.val()), proj));
    assert_eq!(
        stats(block.attn.c_attn.bias.as_ref().unwrap().val()),
        (0.0, 0.0)
    );
    assert_eq!(stats(block.ln_1.gamma.val()), (1.0, 0.0));
    assert_eq!(stats(block.ln_2.beta.as_ref().unwrap().val()), (0.0, 0.0));
}

#[test]
fn dropout_only_in_training() {
    type AD = Autodiff<Flex>;
    let dev = Default::default();
    let config = Gpt2Config::tiny().with_dropout(0.5);
    let model: Gpt<AD> = config.init(&dev).unwrap();
    let ids = [6109u32, 3626, 6100, 345];
    let run = |m: &Gpt<AD>| {
        m.forward(m.tokens(&[&ids], &dev).unwrap())
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>()
    };
    // Training (autodiff backend): dropout makes two passes differ.
    assert_ne!(run(&model), run(&model));
    // Inference (`valid()`): deterministic.
    let inference = model.valid();
    let run_valid = || {
        inference
            .forward(inference.tokens(&[&ids], &dev).unwrap())
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>()
    };
    assert_eq!(run_valid(), run_valid());
}

#[test]
fn untied_head_round_trips_through_hf_export() {
    let dev = Default::default();
    let config = Gpt2Config {
        tie_word_embeddings: false,
        qkv_bias: false,
        ..Gpt2Config::tiny()
    };
    let model: Gpt<B> = config.init(&dev).unwrap();
    assert!(model.lm_head.is_some());
    assert!(model.h[0].attn.c_attn.bias.is_none());
    let dir = tempfile::tempdir().unwrap();
    save_hf_dir(&model, &config, dir.path()).unwrap();
    let (loaded, config2) = pretrained::load_hf_dir::<B>(dir.path(), &dev).unwrap();
    assert_eq!(config2, config);
    let ids = [1u32, 2, 3, 4, 5];
    let logits = |m: &Gpt<B>| {
        m.forward(m.tokens(&[&ids], &dev).unwrap())
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>()
    };
    assert_eq!(logits(&loaded), logits(&model));
    assert_eq!(
        config.num_params(),
        burn::module::Module::num_params(&model)
    );
}
