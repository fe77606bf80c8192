//! The engine against the fixture's reference generations (transformers' greedy
//! `generate`; see `crates/model/tests/fixtures/tiny-gpt2/README.md`), alone, in
//! one batch, joining a running batch, on Flex's kernels, on NdArray's plain Burn ops and,
//! with `--features wgpu`, on wgpu (CI runs it on lavapipe).

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use burn::backend::{Flex, NdArray};
use llm_bpe::Tokenizer;
use llm_infer::{
    Engine, Finish, InferError, InferModel, KvDtype, Quant, Request, SamplingParams, SlotCache,
};
use llm_model::{pretrained, KernelBackend, Segment};
use serde_json::Value;

use common::{greedy, ids};

fn fixture_dir() -> PathBuf {
    common::fixture_dir("tiny-gpt2")
}

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| common::reference("tiny-gpt2"))
}

fn model<B: KernelBackend>(quant: Quant) -> InferModel<B> {
    let (gpt, _) = pretrained::load_hf_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    InferModel::from_gpt(gpt, quant)
}

fn engine<B: KernelBackend>(slots: usize) -> Engine<B> {
    Engine::new(
        model::<B>(Quant::F32),
        Some(Arc::new(Tokenizer::gpt2())),
        slots,
        &Default::default(),
    )
}

fn cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    reference()["generation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (ids(&g["prompt"]), ids(&g["new_tokens"])))
        .collect()
}

fn greedy_matches_alone_and_batched<B: KernelBackend>() {
    let mut e = engine::<B>(4);
    for (prompt, want) in cases() {
        let out = e.generate(vec![greedy(prompt, want.len())]).unwrap();
        assert_eq!(out[0].new_ids, want, "alone");
        assert_eq!(out[0].finish, Finish::Length);
    }
    let requests = cases()
        .into_iter()
        .map(|(p, w)| greedy(p, w.len()))
        .collect();
    let out = e.generate(requests).unwrap();
    for (o, (_, want)) in out.iter().zip(cases()) {
        assert_eq!(
            o.new_ids, want,
            "in a batch of three prompts of lengths 4, 7 and 16"
        );
    }
}

#[test]
fn greedy_matches_transformers_alone_and_in_a_batch_on_flex() {
    greedy_matches_alone_and_batched::<Flex>();
}

#[test]
fn greedy_matches_transformers_alone_and_in_a_batch_on_ndarray_default_ops() {
    greedy_matches_alone_and_batched::<NdArray>();
}

/// The default ops on a GPU backend. Decode's one-row matmuls hit a Burn 0.21 fusion bug
/// on it (see `linear_nt_fused_gpu` in `llm_model::kernels`): without the workaround the
/// prompt's token matches and every decode step after it does not.
#[cfg(feature = "wgpu")]
#[test]
fn greedy_matches_transformers_alone_and_in_a_batch_on_wgpu() {
    greedy_matches_alone_and_batched::<burn::backend::Wgpu>();
}

/// An f16 cache halves the cache's memory and keeps greedy output (attention runs in f32).
#[test]
fn an_f16_cache_keeps_greedy_output() {
    let tok = Some(Arc::new(Tokenizer::gpt2()));
    let device = Default::default();
    let mut e =
        Engine::<Flex>::with_kv(model(Quant::F32), tok.clone(), 3, KvDtype::F16, &device).unwrap();
    let f32_bytes = SlotCache::<Flex>::new(&e.model().config, 3, &device).bytes();
    assert_eq!(2 * e.cache().bytes(), f32_bytes);
    let requests = cases()
        .into_iter()
        .map(|(p, w)| greedy(p, w.len()))
        .collect();
    let out = e.generate(requests).unwrap();
    for (o, (_, want)) in out.iter().zip(cases()) {
        assert_eq!(o.new_ids, want, "f16 cache");
    }
    // NdArray stores no f16: a named error, not a panic.
    let err =
        Engine::<NdArray>::with_kv(model(Quant::F32), tok, 1, KvDtype::F16, &Default::default())
            .err()
            .unwrap();
    assert!(err.to_string().starts_with("kv_cache F16"), "{err}");
}

/// A cache sized to the requests gives the same tokens, and refuses what could outgrow it.
#[test]
fn a_cache_smaller_than_the_context_keeps_output_and_refuses_what_cannot_fit() {
    let (prompt, want) = cases()[1].clone(); // 7 tokens
    let capacity = prompt.len() + want.len();
    let device = Default::default();
    let m = model::<Flex>(Quant::F32);
    let cache =
        SlotCache::<Flex>::with_capacity(&m.config, 1, capacity, KvDtype::F32, &device).unwrap();
    let full = SlotCache::<Flex>::new(&m.config, 1, &device).bytes();
    assert_eq!(cache.bytes() * m.config.n_positions, full * capacity);
    let mut e = Engine::with_cache(m, None, cache);
    let err = e.add(greedy(prompt.clone(), want.len() + 1)).unwrap_err();
    assert!(
        matches!(
            &err,
            InferError::Param {
                param: "max_new_tokens",
                ..
            }
        ),
        "{err}"
    );
    let out = e.generate(vec![greedy(prompt, want.len())]).unwrap();
    assert_eq!(out[0].new_ids, want);
    let config = &e.model().config;
    for bad in [0, config.n_positions + 1] {
        let err = SlotCache::<Flex>::with_capacity(config, 1, bad, KvDtype::F32, &device)
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("cache_capacity"), "{err}");
    }
}

#[test]
fn sequences_join_and_leave_a_running_batch() {
    let cases = cases();
    let mut e = engine::<Flex>(2);
    let a = e.add(greedy(cases[0].0.clone(), 20)).unwrap();
    let doomed = e.add(greedy(cases[2].0.clone(), 20)).unwrap();
    let err = e.add(greedy(vec![1], 1)).unwrap_err();
    assert!(matches!(err, InferError::Full { slots: 2 }), "{err}");
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let mut b = None;
    for step in 0..40 {
        if step == 3 {
            assert!(e.cancel(doomed), "leaves mid-way");
            b = Some(e.add(greedy(cases[1].0.clone(), 20)).unwrap()); // joins mid-way
        }
        for ev in e.step().unwrap() {
            if ev.id == a {
                got_a.push(ev.token);
            } else if Some(ev.id) == b {
                got_b.push(ev.token);
            }
        }
    }
    assert_eq!(e.active(), 0);
    assert_eq!(got_a, cases[0].1);
    assert_eq!(got_b, cases[1].1);
}

/// Next-token NLL over a sequence, one decode step per token.
fn stepwise_nll<B: KernelBackend>(m: &InferModel<B>, seq: &[u32]) -> (f64, Vec<u32>) {
    let mut cache = SlotCache::<B>::new(&m.config, 1, &Default::default());
    let (mut nll, mut argmaxes) = (0.0, Vec::new());
    for p in 0..seq.len() - 1 {
        let logits = m.forward(
            &seq[p..p + 1],
            &[Segment {
                slot: 0,
                pos: p,
                len: 1,
            }],
            &mut cache,
        );
        let row: Vec<f32> = logits.into_data().to_vec().unwrap();
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        nll += lse - row[seq[p + 1] as usize] as f64;
        argmaxes.push(llm_infer::argmax(&row));
    }
    (nll / (seq.len() - 1) as f64, argmaxes)
}

#[test]
fn int8_weights_keep_perplexity_within_one_percent() {
    let (f, q) = (model::<Flex>(Quant::F32), model::<Flex>(Quant::Q8));
    assert!(
        q.weight_bytes() * 3 < f.weight_bytes(),
        "{} vs {}",
        q.weight_bytes(),
        f.weight_bytes()
    );
    let mut agree = (0, 0);
    for g in reference()["generation"].as_array().unwrap() {
        let seq = ids(&g["full_sequence"]);
        let ((nf, af), (nq, aq)) = (stepwise_nll(&f, &seq), stepwise_nll(&q, &seq));
        let ratio = (nq - nf).exp(); // perplexity ratio
        assert!(
            (ratio - 1.0).abs() < 0.01,
            "int8 perplexity / f32 = {ratio}"
        );
        agree.0 += af.iter().zip(&aq).filter(|(a, b)| a == b).count();
        agree.1 += af.len();
    }
    // The fixture's top-2 margins go down to 0.01, so a few flips are expected.
    assert!(
        agree.0 * 10 >= agree.1 * 9,
        "greedy agreement {}/{}",
        agree.0,
        agree.1
    );
}

#[test]
fn int8_runs_on_the_default_ops_too() {
    let seq = ids(&reference()["generation"][0]["full_sequence"]);
    let (a, _) = stepwise_nll(&model::<Flex>(Quant::Q8), &seq);
    let (b, _) = stepwise_nll(&model::<NdArray>(Quant::Q8), &seq);
    // Flex also quantizes the activations; the default multiplies by dequantized weights.
    assert!((a - b).abs() < 5e-3 * a, "{a} vs {b}");
}

#[test]
fn bad_requests_are_named_errors_and_long_prompts_truncate_on_request() {
    let mut e = engine::<Flex>(1);
    let err = e.add(greedy(vec![5, 50257], 3)).unwrap_err();
    assert!(err.to_string().contains("50257"), "{err}");
    let err = e.add(greedy(vec![7; 129], 3)).unwrap_err();
    assert!(
        matches!(
            err,
            InferError::PromptTooLong {
                len: 129,
                n_positions: 128
            }
        ),
        "{err}"
    );
    let mut bad = greedy(vec![1], 3);
    bad.params.top_p = 0.0;
    assert!(e.add(bad).unwrap_err().to_string().contains("top_p"));
    assert!(e.add(greedy(vec![], 3)).is_err());
    assert_eq!(e.active(), 0, "no bad request took a slot");
    let (prompt, _) = cases()[2].clone();
    let mut long: Vec<u32> = (0..120).map(|i| 100 + i).collect();
    long.extend(&prompt);
    let mut r = greedy(long.clone(), 5);
    r.truncate_left = true;
    let cut = e.generate(vec![r]).unwrap();
    let same = e
        .generate(vec![greedy(long[long.len() - 128..].to_vec(), 5)])
        .unwrap();
    assert_eq!(cut[0].new_ids, same[0].new_ids);
}

#[test]
fn generation_slides_past_the_context() {
    let mut e = engine::<Flex>(1);
    let prompt: Vec<u32> = (0..100).map(|i| 300 + i).collect();
    let out = e.generate(vec![greedy(prompt, 60)]).unwrap();
    assert_eq!(out[0].new_ids.len(), 60);
}

#[test]
fn stops_on_tokens_and_strings_and_streams_whole_text() {
    let tok = Tokenizer::gpt2();
    let (prompt, want) = cases()[0].clone();
    let mut e = engine::<Flex>(1);
    let mut r = greedy(prompt.clone(), 20);
    r.params.stop_ids = vec![want[3]];
    let out = e.generate(vec![r]).unwrap();
    let first = want.iter().position(|&t| t == want[3]).unwrap();
    assert_eq!(out[0].new_ids, want[..=first]);
    assert_eq!(out[0].finish, Finish::Stop);

    let full = tok.decode(&want).unwrap();
    let plain = e.generate(vec![greedy(prompt.clone(), 20)]).unwrap();
    assert_eq!(
        plain[0].text, full,
        "streamed pieces add up to the decoded text"
    );
    let stop: String = tok.decode(&want[5..7]).unwrap();
    let mut r = greedy(prompt, 20);
    r.params.stop = vec![stop.clone()];
    let out = e.generate(vec![r]).unwrap();
    assert_eq!(out[0].finish, Finish::Stop);
    assert_eq!(out[0].text, full[..full.find(&stop).unwrap()]);
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let mut e = engine::<Flex>(2);
    let sampled = |seed| Request {
        prompt: cases()[1].0.clone(),
        params: SamplingParams {
            max_new_tokens: 12,
            temperature: 1.0,
            top_p: 0.9,
            seed,
            ..Default::default()
        },
        truncate_left: false,
        prompt_logprobs: false,
    };
    let out = e
        .generate(vec![sampled(3), sampled(3), sampled(4)])
        .unwrap();
    assert_eq!(out[0].new_ids, out[1].new_ids);
    assert_ne!(out[0].new_ids, out[2].new_ids);
}

#[test]
fn a_saved_int8_model_loads_back_the_same() {
    let q = model::<Flex>(Quant::Q8);
    let dir = tempfile::tempdir().unwrap();
    llm_infer::quantized::save_quantized(&q, dir.path()).unwrap();
    assert!(llm_infer::quantized::is_quantized_dir(dir.path()));
    let back =
        llm_infer::quantized::load_quantized::<Flex>(dir.path(), &Default::default()).unwrap();
    assert_eq!(back.weight_bytes(), q.weight_bytes());
    let seq = ids(&reference()["generation"][0]["full_sequence"]);
    assert_eq!(stepwise_nll(&back, &seq), stepwise_nll(&q, &seq));
    // An f32 model is not saved as int8, and a damaged file names the tensor.
    let f = model::<Flex>(Quant::F32);
    assert!(llm_infer::quantized::save_quantized(&f, dir.path()).is_err());
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let config = config.replace("\"n_layer\": 2", "\"n_layer\": 3");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let err = llm_infer::quantized::load_quantized::<Flex>(dir.path(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transformer.h.2") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn perplexity_through_the_engine_layout_equals_the_models() {
    let text = include_str!("../../../assets/data/the-verdict.txt");
    let tok = Tokenizer::gpt2();
    let text: String = text.chars().take(4000).collect();
    let ids = tok.encode(&text).unwrap();
    let device = Default::default();
    let (gpt, _) = pretrained::load_hf_dir::<Flex>(&fixture_dir(), &device).unwrap();
    let want = llm_model::perplexity(&gpt, &ids, 128, 64, 4, &device).unwrap();
    let got = InferModel::from_gpt(gpt, Quant::F32)
        .perplexity(&ids, 128, 64)
        .unwrap();
    assert_eq!((got.tokens, got.windows), (want.tokens, want.windows));
    assert!(
        (got.loss - want.loss).abs() < 1e-4 * want.loss,
        "{} vs {}",
        got.loss,
        want.loss
    );
    let q8 = model::<Flex>(Quant::Q8);
    let q = q8.perplexity(&ids, 128, 64).unwrap();
    assert!(
        (q.perplexity / got.perplexity - 1.0).abs() < 0.01,
        "{} vs {}",
        q.perplexity,
        got.perplexity
    );
    // Greedy-token agreement over the same scored positions: total with itself, and high
    // for int8 against f32.
    let f32 = model::<Flex>(Quant::F32);
    let tokens = got.tokens;
    assert_eq!(
        f32.top1_agreement(&f32, &ids, 128, 64).unwrap(),
        (tokens, tokens)
    );
    let (agree, scored) = q8.top1_agreement(&f32, &ids, 128, 64).unwrap();
    assert_eq!(scored, tokens);
    assert!(agree as f64 >= 0.9 * scored as f64, "{agree} of {scored}");
}

#[test]
fn prompt_logprobs_give_the_reference_loss_while_others_decode() {
    let mut e = engine::<Flex>(3);
    // A sequence already decoding shares the scoring steps.
    let (prompt, _) = cases().remove(0);
    let running = e.add(greedy(prompt, 40)).unwrap();
    e.step().unwrap();
    for s in reference()["sequences"].as_array().unwrap() {
        let Some(loss) = s["loss"].as_f64() else {
            continue;
        };
        let prompt = ids(&s["input_ids"]);
        let mut request = greedy(prompt.clone(), 1);
        request.prompt_logprobs = true;
        request.params.top_logprobs = 2;
        let id = e.add(request).unwrap();
        let event = loop {
            let events = e.step().unwrap();
            if let Some(ev) = events.into_iter().find(|ev| ev.id == id) {
                break ev;
            }
        };
        assert_eq!(event.prompt_logprobs.len(), prompt.len() - 1);
        let tokens: Vec<u32> = event.prompt_logprobs.iter().map(|c| c.token).collect();
        assert_eq!(tokens, prompt[1..]);
        let nll = -(event.prompt_logprobs.iter())
            .map(|c| c.logprob as f64)
            .sum::<f64>()
            / tokens.len() as f64;
        assert!(
            (nll - loss).abs() <= 1e-4 * loss,
            "{}: {nll} against the reference loss {loss}",
            s["name"]
        );
        for c in &event.prompt_logprobs {
            assert_eq!(c.top_logprobs.len(), 2);
            assert!(c.top_logprobs[0].1 >= c.logprob);
        }
    }
    assert!(e.cancel(running), "the decoding sequence ran on alongside");
}
