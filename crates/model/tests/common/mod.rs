//! Shared by the model tests: the reference fixture and its numbers.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use llm_model::{pretrained, Gpt, Gpt2Config};
use serde_json::Value;

/// `crates/model/tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `crates/model/tests/fixtures/tiny-gpt2`.
pub fn fixture_dir() -> PathBuf {
    fixture("tiny-gpt2")
}

/// A fixture's `reference.json` (stored gzip-compressed), parsed.
pub fn reference_of(name: &str) -> Value {
    let file = std::fs::File::open(fixture(name).join("reference.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// tiny-gpt2's `reference.json`, parsed once.
pub fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| reference_of("tiny-gpt2"))
}

/// The fixture model, from `model.safetensors`.
pub fn fixture_model<B: Backend>(device: &B::Device) -> (Gpt<B>, Gpt2Config) {
    pretrained::load_hf_dir::<B>(&fixture_dir(), device).unwrap()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn floats2(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

/// A tensor's values as f64.
pub fn values<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f32>().map(f64::from).collect()
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}
