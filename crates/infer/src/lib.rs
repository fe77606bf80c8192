//! # llm-infer: fast generation
//!
//! Will hold the inference engine: samplers (greedy, temperature, top-k, top-p, repetition
//! penalty), streaming output through `llm_bpe::StreamDecoder`, batched generation,
//! quantized weights, and an HTTP server; benchmarked against llama.cpp on the CPU.
//!
//! Nothing is implemented yet.
