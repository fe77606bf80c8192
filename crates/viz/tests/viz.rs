//! llm-viz on the tiny GPT-2 fixture and on patterns whose pictures and scores are known.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use llm_bpe::Tokenizer;
use llm_model::{pretrained, Gpt};
use llm_viz::heatmap::{head_png, heat, MASKED};
use llm_viz::summary::{entropy, head_scores};
use llm_viz::{
    analyse, write_report, AttentionFile, AttentionOptions, LayerAttention, LayerChoice, Prompt,
    RunMetrics, Summary,
};
use serde_json::Value;

type B = Flex;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tiny-gpt2")
}

fn fixture() -> Gpt<B> {
    pretrained::load_hf_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .0
}

/// The fixture's attention report for `prompt`, with the GPT-2 tokenizer, on Flex.
fn look(
    model: &Gpt<B>,
    prompt: &Prompt,
    options: &AttentionOptions,
) -> llm_viz::Result<llm_viz::AttentionReport> {
    let device = burn::tensor::Device::<B>::default();
    analyse(
        model,
        &Tokenizer::gpt2(),
        "tiny-gpt2",
        prompt,
        options,
        &device,
    )
}

/// The transformers reference (`crates/model/tests/fixtures/tiny-gpt2`, made by the
/// fixture's generator script): one head's attention probabilities.
fn reference_attention() -> Value {
    let file = std::fs::File::open(fixture_dir().join("reference.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["attention"].clone()
}

fn ids_of(v: &Value) -> Vec<u32> {
    (v.as_array().unwrap().iter())
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A PNG's width, height and RGB(A) pixels.
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let pixels = (buf[..info.buffer_size()].chunks(step))
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

/// Variance of the pixels' grey levels: near 0 for a blank picture.
fn grey_variance(pixels: &[[u8; 3]]) -> f64 {
    let grey: Vec<f64> = (pixels.iter())
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64
}

fn written(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn attention_json_holds_the_models_attention_and_matches_transformers() {
    let model = fixture();
    let reference = reference_attention();
    let ids = ids_of(&reference["input_ids"]);
    let options = AttentionOptions {
        layer: LayerChoice::All,
        ..Default::default()
    };
    let report = look(&model, &Prompt::Ids(ids.clone()), &options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_report(&report, dir.path(), 256).unwrap();
    let file: AttentionFile =
        serde_json::from_slice(&written(dir.path(), "attention.json")).unwrap();
    assert_eq!(
        (file.layers.clone(), file.heads.clone()),
        (vec![0, 1], vec![0, 1, 2, 3])
    );
    assert_eq!(file.ids, ids);
    assert_eq!(file.tokens.len(), ids.len());

    // Every probability equals the model's own, to 1e-6 (the JSON round trip is exact).
    let device = Default::default();
    let out = model
        .forward_with_attention(model.tokens(&[&ids], &device).unwrap())
        .unwrap();
    let t = ids.len();
    for (l, probs) in out.attentions.into_iter().enumerate() {
        let probs: Vec<f32> = probs.into_data().to_vec().unwrap(); // [1, n_head, t, t]
        for h in 0..4 {
            for q in 0..t {
                assert_eq!(
                    file.attention[l][h][q].len(),
                    q + 1,
                    "row {q} holds keys 0..=q"
                );
                for k in 0..t {
                    let model_p = probs[(h * t + q) * t + k];
                    let json_p = file.attention[l][h][q].get(k).copied().unwrap_or(0.0);
                    assert!(
                        (model_p - json_p).abs() <= 1e-6,
                        "layer {l} head {h} [{q}][{k}]: {json_p} in attention.json, {model_p} in the model"
                    );
                }
            }
        }
    }

    // The transformers reference head, to the parity suite's 1e-5.
    let (layer, head) = (
        reference["layer"].as_u64().unwrap() as usize,
        reference["head"].as_u64().unwrap() as usize,
    );
    for (q, row) in reference["probs"].as_array().unwrap().iter().enumerate() {
        for (k, want) in row.as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = file.attention[layer][head][q]
                .get(k)
                .copied()
                .unwrap_or(0.0) as f64;
            assert!(
                (got - want).abs() <= 1e-5,
                "layer {layer} head {head} [{q}][{k}]: {got}, transformers {want}"
            );
        }
    }
}

#[test]
fn the_report_writes_every_picture_and_they_are_not_blank() {
    let model = fixture();
    let text = "The gold trophy would not fit in the brown suitcase because it was too large. I needed a larger";
    let options = AttentionOptions {
        heads: vec![2, 0],
        ..Default::default()
    };
    let prompt = Prompt::Text(text.into());
    let report = look(&model, &prompt, &options).unwrap();
    // `--layer` defaults to -2: the second-to-last layer, layer 0 of 2.
    assert_eq!(report.file.layers, vec![0]);
    assert_eq!(report.file.heads, vec![2, 0]);
    assert_eq!(report.file.text.as_deref(), Some(text));
    assert_eq!(
        report.file.tokens.concat(),
        text,
        "the tokens spell the text"
    );
    let dir = tempfile::tempdir().unwrap();
    let paths = write_report(&report, dir.path(), 256).unwrap();
    let mut names: Vec<String> = (paths.iter())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "attention.html",
            "attention.json",
            "layer-0-head-0.png",
            "layer-0-head-2.png",
            "layer-0.png",
            "summary.json"
        ]
    );
    for name in ["layer-0.png", "layer-0-head-0.png", "layer-0-head-2.png"] {
        let (w, h, pixels) = decode_png(&written(dir.path(), name));
        assert!(
            (300..=4000).contains(&w) && (300..=4000).contains(&h),
            "{name}: {w}×{h}"
        );
        let v = grey_variance(&pixels);
        assert!(v > 100.0, "{name} looks blank: grey variance {v:.1}");
    }
    // The grid: two heads side by side, so wider than tall.
    let (w, h, _) = decode_png(&written(dir.path(), "layer-0.png"));
    assert!(w > h, "layer-0.png is {w}×{h}");
}

#[test]
fn a_known_pattern_draws_as_expected() {
    // Even queries look at the first token, odd ones at themselves.
    let n = 9;
    let matrix: Vec<Vec<f32>> = (0..n)
        .map(|q| {
            let mut row = vec![0.0; q + 1];
            row[if q % 2 == 0 { 0 } else { q }] = 1.0;
            row
        })
        .collect();
    let tokens: Vec<String> = (0..n).map(|i| format!(" tok{i}")).collect();
    let (png, grid) = head_png(&matrix, &tokens, "pattern").unwrap();
    let (w, _, pixels) = decode_png(&png);
    let at = |q: usize, k: usize| {
        let (x, y) = grid.center(q, k);
        pixels[(y as u32 * w + x as u32) as usize]
    };
    let close = |a: [u8; 3], b: plotters::style::RGBColor| {
        (a[0] as i32 - b.0 as i32).abs() <= 2
            && (a[1] as i32 - b.1 as i32).abs() <= 2
            && (a[2] as i32 - b.2 as i32).abs() <= 2
    };
    for (q, row) in matrix.iter().enumerate() {
        for k in 0..n {
            // Keys after the query are masked; the row holds the others.
            let want = row.get(k).map_or(MASKED, |&p| heat(p));
            assert!(
                close(at(q, k), want),
                "cell ({q}, {k}): {:?}, want {want:?}",
                at(q, k)
            );
        }
    }
    assert!(close(at(4, 0), heat(1.0)) && close(at(4, 1), heat(0.0)));
}

#[test]
fn layers_and_heads_out_of_range_name_the_valid_range() {
    let resolve = |s: &str| s.parse::<LayerChoice>().and_then(|c| c.resolve(2));
    assert_eq!(resolve("-1").unwrap(), vec![1]);
    assert_eq!(resolve("-2").unwrap(), vec![0]);
    assert_eq!(resolve("1").unwrap(), vec![1]);
    assert_eq!(resolve("all").unwrap(), vec![0, 1]);
    // The default is the second-to-last layer, or the only one.
    assert_eq!(LayerChoice::default().resolve(12).unwrap(), vec![10]);
    assert_eq!(LayerChoice::default().resolve(1).unwrap(), vec![0]);
    for bad in ["2", "-3"] {
        let e = resolve(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("layer {bad}")) && e.contains("0..=1") && e.contains("-2..=-1"),
            "{e}"
        );
    }
    assert!(resolve("x").unwrap_err().to_string().contains("`all`"));

    let model = fixture();
    let run = |options: AttentionOptions, prompt: Prompt| {
        look(&model, &prompt, &options)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = run(
        AttentionOptions {
            heads: vec![1, 4],
            ..Default::default()
        },
        Prompt::Text("hello".into()),
    );
    assert!(
        e.contains("head 4") && e.contains("4 heads") && e.contains("0..=3"),
        "{e}"
    );
    // Past the context (128 tokens for the fixture): an error, not a silent cut.
    let e = run(AttentionOptions::default(), Prompt::Ids(vec![11; 129]));
    assert!(e.contains("129 tokens") && e.contains("holds 128"), "{e}");
    let e = run(AttentionOptions::default(), Prompt::Text(String::new()));
    assert!(e.contains("no tokens"), "{e}");
}

#[test]
fn the_page_embeds_its_data_inline_and_notes_a_cut() {
    let model = fixture();
    let text = "</script><!-- & \"quotes\" é\n".repeat(8);
    let prompt = Prompt::Text(text.clone());
    let report = look(&model, &prompt, &AttentionOptions::default()).unwrap();
    let t = report.file.ids.len();
    assert!(t > 40, "{t} tokens");
    let page = llm_viz::page::attention_page(&report.file, &report.summary.heads, 40).unwrap();
    for external in ["http://", "https://", "//cdn", "src=\"", "@import"] {
        assert!(!page.contains(external), "the page references {external:?}");
    }
    let start = r#"<script id="attention-data" type="application/json">"#;
    let data = &page[page.find(start).unwrap() + start.len()..];
    let data = &data[..data.find("</script>").unwrap()];
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["cut"], serde_json::json!({"shown": 40, "total": t}));
    assert_eq!(data["tokens"].as_array().unwrap().len(), 40);
    assert_eq!(data["attention"][0][0].as_array().unwrap().len(), 40);
    assert_eq!(data["tokens"][0], report.file.tokens[0]);
    assert_eq!(data["summary"].as_array().unwrap().len(), 2 * 4);
    // Short enough: no cut.
    let page = llm_viz::page::attention_page(&report.file, &[], t).unwrap();
    assert!(page.contains(r#""cut":null"#));
}

fn layer(n_head: usize, t: usize, row: impl Fn(usize, usize) -> Vec<f32>) -> LayerAttention {
    let mut probs = vec![0.0; n_head * t * t];
    for h in 0..n_head {
        for q in 0..t {
            let r = row(h, q);
            probs[(h * t + q) * t..(h * t + q) * t + r.len()].copy_from_slice(&r);
        }
    }
    LayerAttention::new(n_head, t, probs).unwrap()
}

#[test]
fn head_scores_recognise_their_patterns() {
    let (t, period) = (12, 6);
    let one_hot = |q: usize, k: usize| {
        let mut r = vec![0.0; q + 1];
        r[k] = 1.0;
        r
    };
    // Head 0 looks at the previous token, 1 at the first, 2 spreads evenly, 3 induction.
    let att = layer(4, t, |h, q| match h {
        0 => one_hot(q, q.saturating_sub(1)),
        1 => one_hot(q, 0),
        2 => vec![1.0 / (q + 1) as f32; q + 1],
        _ if q >= period => one_hot(q, q + 1 - period),
        _ => one_hot(q, q),
    });
    let s: Vec<_> = (0..4)
        .map(|h| head_scores(5, h, &att, &att, period))
        .collect();
    assert_eq!((s[0].layer, s[0].head), (5, 0));
    assert!((s[0].previous_token - 1.0).abs() < 1e-9 && s[0].entropy.abs() < 1e-9);
    assert!((s[1].sink - 1.0).abs() < 1e-9 && s[1].previous_token < 0.1);
    let uniform: f64 = (1..t).map(|q| ((q + 1) as f64).ln()).sum::<f64>() / (t - 1) as f64;
    assert!(
        (s[2].entropy - uniform).abs() < 1e-5,
        "{} vs {uniform}",
        s[2].entropy
    );
    assert!((s[3].induction - 1.0).abs() < 1e-9, "{}", s[3].induction);
    assert!(s[0].induction < 0.5 && s[1].induction < 0.5);
    assert!((entropy(&[0.5, 0.5]) - 2f64.ln()).abs() < 1e-12);
}

#[test]
fn summary_covers_every_head_with_a_seeded_probe() {
    let model = fixture();
    let go = |seed| {
        let options = AttentionOptions {
            induction_seed: seed,
            ..Default::default()
        };
        look(&model, &Prompt::Text("one two three four".into()), &options)
            .unwrap()
            .summary
    };
    let s: Summary = go(3);
    assert_eq!(s.heads.len(), 2 * 4);
    assert_eq!(s.induction_probe.period, 50);
    let (first, second) = s.induction_probe.ids.split_at(50);
    assert_eq!(first, second, "the probe repeats itself");
    for h in &s.heads {
        for (name, v) in [
            ("sink", h.sink),
            ("previous_token", h.previous_token),
            ("induction", h.induction),
        ] {
            assert!((0.0..=1.0 + 1e-6).contains(&v), "{name} = {v}");
        }
        assert!(
            h.entropy >= 0.0 && h.entropy <= (4f64).ln() + 1e-6,
            "entropy {}",
            h.entropy
        );
    }
    assert_eq!(go(3), s, "same seed, same summary");
    assert_ne!(go(4).induction_probe.ids, s.induction_probe.ids);
}

fn write_metrics(dir: &Path, lines: &[Value]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    dir.to_path_buf()
}

fn pretrain_like(steps: usize, scale: f64) -> Vec<Value> {
    (1..=steps)
        .map(|s| {
            let loss = 10.0 * scale / (1.0 + s as f64 * 0.1);
            let mut v = serde_json::json!({
                "step": s, "loss": loss, "lr": 1e-3 * (s as f64 / steps as f64),
                "grad_norm": 1.0 + (s % 3) as f64, "tokens_per_s": 1000.0, "elapsed": s as f64,
                "val_loss": null,
            });
            if s % 5 == 0 {
                v["val_loss"] = serde_json::json!(loss + 0.2);
            }
            v
        })
        .collect()
}

#[test]
fn runs_plot_on_shared_axes_with_each_tasks_measures() {
    let root = tempfile::tempdir().unwrap();
    let a = write_metrics(&root.path().join("small"), &pretrain_like(30, 1.0));
    let b = write_metrics(&root.path().join("wide"), &pretrain_like(20, 0.8));
    let mut classify = pretrain_like(10, 1.0);
    let mut dpo = pretrain_like(10, 1.0);
    for (i, (c, d)) in classify.iter_mut().zip(&mut dpo).enumerate() {
        if i % 5 == 4 {
            c["val_accuracy"] = serde_json::json!(0.5 + i as f64 * 0.04);
            c["train_accuracy"] = serde_json::json!(0.6 + i as f64 * 0.03);
            d["val_reward_margin"] = serde_json::json!(i as f64 * 0.1);
            d["val_reward_accuracy"] = serde_json::json!(0.5 + i as f64 * 0.02);
        }
    }
    let c = write_metrics(&root.path().join("spam"), &classify);
    let d = write_metrics(&root.path().join("prefs"), &dpo);

    let out = root.path().join("plots/compare.png");
    let paths = llm_viz::write_run_plot(&[a.clone(), b, c, d], &out).unwrap();
    assert_eq!(
        paths,
        vec![out.clone(), root.path().join("plots/compare.svg")]
    );
    let (w, h, pixels) = decode_png(&std::fs::read(&out).unwrap());
    // Six panels, two a row.
    assert_eq!((w, h), (1280, 3 * 360));
    assert!(grey_variance(&pixels) > 50.0);
    let svg = std::fs::read_to_string(root.path().join("plots/compare.svg")).unwrap();
    for text in [
        "small: loss",
        "wide: val_loss",
        "learning rate",
        "gradient norm",
        "spam: val_accuracy",
        "prefs: val_reward_margin",
        "prefs: val_reward_accuracy",
    ] {
        assert!(svg.contains(text), "the SVG has no {text:?}");
    }

    // One run: three panels, and the legend names the series only.
    let paths = llm_viz::plot_run_dir(&a).unwrap();
    assert_eq!(paths[0], a.join("metrics.png"));
    let (w, h, _) = decode_png(&std::fs::read(&paths[0]).unwrap());
    assert_eq!((w, h), (1280, 2 * 360));
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(svg.contains("val_loss") && !svg.contains("small: loss"));
}

#[test]
fn a_run_without_metrics_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = |dir: &Path| RunMetrics::read(dir).unwrap_err().to_string();
    let e = err(&root.path().join("missing"));
    assert!(
        e.contains("missing") && e.contains("no such run directory"),
        "{e}"
    );
    let e = err(root.path());
    assert!(
        e.contains("no metrics.jsonl") && e.contains("run directory"),
        "{e}"
    );
    std::fs::write(root.path().join("metrics.jsonl"), "").unwrap();
    assert!(err(root.path()).contains("no metrics yet"));
    std::fs::write(
        root.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 2}\n[1]\n",
    )
    .unwrap();
    let e = err(root.path());
    assert!(
        e.contains("metrics.jsonl: line 2: not a JSON object"),
        "{e}"
    );
    // A line being written right now (no newline yet) is skipped.
    std::fs::write(
        root.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"lo",
    )
    .unwrap();
    let run = RunMetrics::read(root.path()).unwrap();
    assert_eq!(run.series["loss"], vec![(1.0, 2.0)]);
}
