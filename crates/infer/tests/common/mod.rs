//! Shared by the engine and server tests: the model fixtures, their transformers
//! references, and a greedy request.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

use llm_infer::{Request, SamplingParams};
use serde_json::Value;

/// `crates/model/tests/fixtures/NAME` (`tiny-gpt2`, `tiny-llama`, `tiny-mixtral`).
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../model/tests/fixtures/{name}"))
}

/// A fixture's `reference.json.gz`, made by its generator script.
pub fn reference(name: &str) -> Value {
    let file = std::fs::File::open(fixture_dir(name).join("reference.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn ids(v: &Value) -> Vec<u32> {
    (v.as_array().unwrap().iter())
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `n` greedy tokens after `prompt`.
pub fn greedy(prompt: Vec<u32>, n: usize) -> Request {
    Request {
        prompt,
        params: SamplingParams {
            max_new_tokens: n,
            ..Default::default()
        },
        truncate_left: false,
        prompt_logprobs: false,
    }
}
