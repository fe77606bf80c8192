#![allow(dead_code)]
use std::path::PathBuf;

pub type B = burn::backend::Flex;

pub fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/data")
        .join(name)
}

pub fn ints<const D: usize>(t: burn::tensor::Tensor<B, D, burn::tensor::Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}
