//! The proof: on the reference fixture (a randomly initialised, perturbed GPT-2 in exact
//! Hugging Face layout), our model reproduces what transformers computed, on every CPU
//! backend (and on wgpu when that feature is on).
//!
//! Tolerances (from the fixture's README): logits 1e-4 absolute (the tanh-vs-erf GELU
//! difference alone is 7.9e-4), losses 1e-5 relative, attention probabilities 1e-5, greedy
//! tokens exactly, the AdamW step 1e-4 relative.

mod common;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use common::*;
use llm_model::{
    cross_entropy, generate, generate_uncached, ForwardOptions, GenerateConfig, Gpt,
    KernelAutodiff, KernelBackend, IGNORE_INDEX,
};

/// Per-backend tolerances: CPU backends get the fixture's suggested bounds.
struct Tol {
    logits: f64,
    loss_rel: f64,
    probs: f64,
    train_rel: f64,
    /// The same weights read from another file layout, the same forward pass.
    same_weights: f64,
}

const CPU: Tol = Tol {
    logits: 1e-4,
    loss_rel: 1e-5,
    probs: 1e-5,
    train_rel: 1e-4,
    same_weights: 1e-6,
};

/// On wgpu two runs of the same forward pass in one process need not round alike (fused
/// kernels and autotuned matmuls may differ between them): measured 2.9e-6 on lavapipe for
/// the same weights from another layout. A wrong weight moves logits by far more (the erf
/// GELU alone by 7.9e-4).
#[cfg(feature = "wgpu")]
const GPU: Tol = Tol {
    same_weights: 1e-5,
    ..CPU
};

fn check_sequences<B: KernelBackend>(device: &B::Device, tol: &Tol) {
    let (model, _) = fixture_model::<B>(device);
    let (mut worst_logit, mut worst_loss) = (0f64, 0f64);
    for seq in reference()["sequences"].as_array().unwrap() {
        let name = seq["name"].as_str().unwrap();
        let input = ids(&seq["input_ids"]);
        let l = input.len();
        let logits = model.forward(model.tokens(&[&input], device).unwrap()); // [1, l, vocab]
        let [_, _, v] = logits.dims();
        let rows: Vec<Vec<f64>> = values(logits.clone())
            .chunks(v)
            .map(<[f64]>::to_vec)
            .collect();
        let r = &seq["logits"];

        // Full logits where stored, else the last row, plus per-row summaries.
        if !r["full"].is_null() {
            let want = floats2(&r["full"]);
            for (i, row) in rows.iter().enumerate() {
                let d = max_abs_diff(row, &want[i]);
                worst_logit = worst_logit.max(d);
                assert!(d <= tol.logits, "{name}: row {i} max |Δ logits| = {d:e}");
            }
        }
        let d = max_abs_diff(&rows[l - 1], &floats(&r["last"]));
        worst_logit = worst_logit.max(d);
        assert!(d <= tol.logits, "{name}: last row max |Δ logits| = {d:e}");
        for s in r["samples"].as_array().unwrap() {
            let (p, k) = (
                s["pos"].as_u64().unwrap() as usize,
                s["vocab"].as_u64().unwrap() as usize,
            );
            let d = (rows[p][k] - s["value"].as_f64().unwrap()).abs();
            assert!(d <= tol.logits, "{name}: logits[{p}][{k}] off by {d:e}");
        }
        let argmax: Vec<u32> = rows
            .iter()
            .map(|row| {
                let f: Vec<f32> = row.iter().map(|&x| x as f32).collect();
                llm_model::argmax(&f)
            })
            .collect();
        assert_eq!(argmax, ids(&r["argmax"]), "{name}: argmax");
        for (i, (row, want)) in rows.iter().zip(floats(&r["logsumexp"])).enumerate() {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            assert!(
                (lse - want).abs() <= tol.logits,
                "{name}: logsumexp row {i}"
            );
        }
        let sum: f64 = rows.iter().flatten().sum();
        let mean_err = (sum - r["sum"].as_f64().unwrap()).abs() / (l * v) as f64;
        assert!(
            mean_err <= tol.logits,
            "{name}: mean error {mean_err:e} from the sum"
        );

        // Loss: next-token cross-entropy over the l − 1 shifted targets.
        if let Some(want) = seq["loss"].as_f64() {
            let mut targets: Vec<i64> = input[1..].iter().map(|&x| x as i64).collect();
            targets.push(IGNORE_INDEX);
            let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [1, l]), device);
            let loss: f32 = cross_entropy(logits, targets).into_scalar().elem();
            let e = rel_err(loss as f64, want);
            worst_loss = worst_loss.max(e);
            assert!(
                e <= tol.loss_rel,
                "{name}: loss {loss} vs {want}, relative error {e:e}"
            );
        }
    }
    eprintln!(
        "{}: max |Δ logits| {worst_logit:.2e}, max loss relative error {worst_loss:.2e}",
        B::name(device)
    );
}

fn check_generation<B: KernelBackend>(device: &B::Device) {
    let (model, _) = fixture_model::<B>(device);
    for g in reference()["generation"].as_array().unwrap() {
        let name = g["name"].as_str().unwrap();
        let prompt = ids(&g["prompt"]);
        let want = ids(&g["new_tokens"]);
        let config = GenerateConfig {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let cached = generate(&model, &prompt, &config, device, |t| streamed.push(t)).unwrap();
        assert_eq!(cached, want, "{name}: cached greedy continuation");
        assert_eq!(streamed, want, "{name}: tokens passed to the callback");
        let uncached = generate_uncached(&model, &prompt, want.len(), device).unwrap();
        assert_eq!(uncached, want, "{name}: uncached greedy continuation");
    }
}

fn check_attention<B: KernelBackend>(device: &B::Device, tol: &Tol) {
    let (model, config) = fixture_model::<B>(device);
    let a = &reference()["attention"];
    let input = ids(&a["input_ids"]);
    let (layer, head) = (
        a["layer"].as_u64().unwrap() as usize,
        a["head"].as_u64().unwrap() as usize,
    );
    let out = model
        .forward_with_attention(model.tokens(&[&input], device).unwrap())
        .unwrap();
    assert_eq!(out.attentions.len(), config.n_layer);
    let l = input.len();
    let probs = out.attentions[layer]
        .clone()
        .narrow(1, head, 1)
        .reshape([l * l]);
    let want: Vec<f64> = floats2(&a["probs"]).concat();
    let d = max_abs_diff(&values(probs), &want);
    eprintln!(
        "{}: attention probabilities max |Δ| {d:.2e}",
        B::name(device)
    );
    assert!(
        d <= tol.probs,
        "attention layer {layer} head {head}: max |Δ| = {d:e}"
    );
    for (i, p) in out.attentions.iter().enumerate() {
        let sum: f64 = values(p.clone()).iter().sum();
        let want = a["all_layers_heads_sum"][i].as_f64().unwrap();
        assert!(
            (sum - want).abs() < 1e-3,
            "layer {i}: probabilities sum to {sum}, not {want}"
        );
    }
    // The probabilities path and the fused path give the same logits.
    let fused = model.forward(model.tokens(&[&input], device).unwrap());
    let d = max_abs_diff(&values(fused), &values(out.logits));
    assert!(d <= tol.logits, "fused vs explicit attention: {d:e}");
}

fn check_kv_cache<B: KernelBackend>(device: &B::Device) {
    let (model, _) = fixture_model::<B>(device);
    let input = ids(&reference()["sequences"][3]["input_ids"]); // rand_len16
    let full = values(model.forward(model.tokens(&[&input], device).unwrap()));
    let v = full.len() / input.len();
    // Prefill 5 tokens, then one at a time: every row must match the full forward.
    let mut cache = model.new_cache();
    let mut rows = Vec::new();
    let mut chunks: Vec<&[u32]> = vec![&input[..5]];
    chunks.extend(input[5..].chunks(1));
    for chunk in chunks {
        let ids = model.tokens(&[chunk], device).unwrap();
        let out = model
            .forward_with(ids, Some(&mut cache), ForwardOptions::default())
            .unwrap();
        rows.extend(values(out.logits));
    }
    assert_eq!(cache.len(), input.len());
    let d = max_abs_diff(&rows, &full);
    assert!(d <= 1e-4, "cached vs recomputed logits: max |Δ| = {d:e}");
    assert_eq!(rows.len(), input.len() * v);
}

/// Σ x² in f64 on the host: an f32 sum over millions of elements would add its own error.
fn sum_sq<B: Backend, const D: usize>(t: Tensor<B, D>) -> f64 {
    t.into_data()
        .iter::<f32>()
        .map(|x| (x as f64) * (x as f64))
        .sum()
}

/// Sums of squared gradients over every parameter.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    sum_sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.sum_sq += sum_sq(g);
        }
    }
}

fn loss_on<B: KernelBackend>(
    model: &Gpt<B>,
    batch: &[Vec<u32>],
    device: &B::Device,
) -> Tensor<B, 1> {
    let rows: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
    let logits = model.forward(model.tokens(&rows, device).unwrap());
    let t = batch[0].len();
    let targets: Vec<i64> = batch
        .iter()
        .flat_map(|r| r[1..].iter().map(|&x| x as i64).chain([IGNORE_INDEX]))
        .collect();
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [batch.len(), t]), device);
    cross_entropy(logits, targets)
}

fn check_train_step<B: KernelAutodiff>(device: &B::Device, tol: &Tol) {
    let (mut model, _) = fixture_model::<B>(device);
    let r = &reference()["train_step"];
    let batch: Vec<Vec<u32>> = r["batch"].as_array().unwrap().iter().map(ids).collect();

    let loss = loss_on(&model, &batch, device);
    let loss_before: f32 = loss.clone().into_scalar().elem();
    assert!(rel_err(loss_before as f64, r["loss_before"].as_f64().unwrap()) <= tol.loss_rel);

    let grads = loss.backward();
    let wte_grad = model.wte.weight.val().grad(&grads).unwrap();
    let wte_norm = sum_sq(wte_grad).sqrt();
    let e = rel_err(wte_norm, r["wte_grad_l2_norm"].as_f64().unwrap());
    assert!(
        e <= tol.train_rel,
        "wte gradient norm {wte_norm}, relative error {e:e}"
    );
    let mut norm = GradNorm::<B> {
        grads: &grads,
        sum_sq: 0.0,
    };
    model.visit(&mut norm);
    let global = norm.sum_sq.sqrt();
    let e = rel_err(global, r["global_grad_l2_norm"].as_f64().unwrap());
    assert!(
        e <= tol.train_rel,
        "global gradient norm {global}, relative error {e:e}"
    );

    // torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1) on every
    // parameter, as the fixture was made.
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.1)
        .init::<B, Gpt<B>>();
    let grads = GradientsParams::from_grads(grads, &model);
    model = optim.step(1e-3, model, grads);

    let loss_after: f32 = loss_on(&model.valid(), &batch, device).into_scalar().elem();
    let e = rel_err(loss_after as f64, r["loss_after"].as_f64().unwrap());
    eprintln!(
        "{}: AdamW step relative errors: loss_after {e:.2e}, wte grad norm {:.2e}, global grad norm {:.2e}",
        B::name(device),
        rel_err(wte_norm, r["wte_grad_l2_norm"].as_f64().unwrap()),
        rel_err(global, r["global_grad_l2_norm"].as_f64().unwrap()),
    );
    assert!(
        e <= tol.train_rel,
        "loss after the step {loss_after}, relative error {e:e}"
    );
    let ln_f_bias = values(model.ln_f.beta.as_ref().unwrap().val());
    let d = max_abs_diff(&ln_f_bias, &floats(&r["ln_f_bias_after_step"]));
    assert!(d <= 1e-5, "ln_f.bias after the step: {d:e}");
}

fn check_all_layouts_agree<B: KernelBackend>(device: &B::Device, tol: &Tol) {
    use llm_model::weights::{load_weights, WeightFile};
    let dir = fixture_dir();
    let (model, config) = fixture_model::<B>(device);
    let input = ids(&reference()["sequences"][2]["input_ids"]); // rand_len7
    let logits = |m: &Gpt<B>| values(m.forward(m.tokens(&[&input], device).unwrap()));
    let base = logits(&model);
    for file in ["pytorch_model.bin", "legacy/model.safetensors"] {
        let other: Gpt<B> =
            load_weights(&config, &WeightFile::open(dir.join(file)).unwrap(), device).unwrap();
        let d = max_abs_diff(&logits(&other), &base);
        assert!(d <= tol.same_weights, "{file}: logits differ by {d:e}");
    }
}

macro_rules! parity_suite {
    ($name:ident, $backend:ty, $tol:expr) => {
        mod $name {
            use super::*;
            type B = $backend;
            type AD = burn::backend::Autodiff<$backend>;

            #[test]
            fn logits_and_losses() {
                check_sequences::<B>(&Default::default(), &$tol);
            }
            #[test]
            fn greedy_generation_cached_and_uncached() {
                check_generation::<B>(&Default::default());
            }
            #[test]
            fn attention_probabilities() {
                check_attention::<B>(&Default::default(), &$tol);
            }
            #[test]
            fn kv_cache_matches_recompute() {
                check_kv_cache::<B>(&Default::default());
            }
            #[test]
            fn one_adamw_step() {
                check_train_step::<AD>(&Default::default(), &$tol);
            }
            #[test]
            fn bin_and_legacy_layouts_give_the_same_logits() {
                check_all_layouts_agree::<B>(&Default::default(), &$tol);
            }
        }
    };
}

parity_suite!(flex, burn::backend::Flex, CPU);
parity_suite!(ndarray, burn::backend::NdArray, CPU);

// wgpu on Mesa's lavapipe (software Vulkan) in CI: the same suite, proving the backend swap.
// Measured there: logits 3.6e-6, losses 1.5e-7, attention 2.1e-7, AdamW step ≤ 3.1e-7
// (relative), so the CPU bounds hold as they are, but for two runs of the same pass
// (`GPU`). A hardware GPU with fast-math kernels may need looser bounds; those would still have to stay below the smallest real mistake in the
// fixture's table (the erf GELU moves logits by 7.9e-4).
#[cfg(feature = "wgpu")]
parity_suite!(wgpu, llm_model::backend::Wgpu, GPU);
