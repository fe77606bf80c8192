//! What checkpoint checksums cost: saving and loading a GPT-2 124M training checkpoint
//! (the model, plus two optimizer-sized sections: about 1.5 GB, as `pretrain` writes),
//! with the SHA-256 verification that `Checkpoint::load` does, against the hashing alone
//! and a plain read of the file.
//!
//! `cargo bench -p llm-model --bench checkpoint`. The file is in the page cache after the
//! first read, so the figures are the CPU cost, the worst case for the checksums' share.

use llm_common::bench::median_secs;
use llm_model::backend::DefaultBackend;
use llm_model::{Checkpoint, Gpt2Config};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

#[global_allocator]
static GLOBAL: llm_model::alloc::MiMalloc = llm_model::alloc::MiMalloc;

fn main() {
    let runs = 5;
    let device = Default::default();
    let config = Gpt2Config::gpt2();
    let model = config.init::<DefaultBackend>(&device).unwrap();
    let mut ckpt = Checkpoint::from_model(&model).unwrap();
    let model_bytes = ckpt.section("model").unwrap().len();
    // AdamW's two moments: as large again as the weights, split into the two groups.
    let moments: Vec<u8> = (0..model_bytes).map(|i| (i * 31 % 251) as u8).collect();
    ckpt.set_section("optim.decay", moments.clone());
    ckpt.set_section("optim.no_decay", moments);
    drop(model);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.ckpt");

    let save = median_secs(runs, || ckpt.save(&path).unwrap());
    let size = std::fs::metadata(&path).unwrap().len() as f64;
    let read = median_secs(runs, || {
        std::hint::black_box(std::fs::read(&path).unwrap());
    });
    let load = median_secs(runs, || {
        std::hint::black_box(Checkpoint::load(&path).unwrap());
    });
    let restore = median_secs(runs, || {
        let c = Checkpoint::load(&path).unwrap();
        std::hint::black_box(c.model::<DefaultBackend>(&device).unwrap());
    });
    let sections: Vec<&[u8]> = ["model", "optim.decay", "optim.no_decay"]
        .iter()
        .map(|s| ckpt.section(s).unwrap())
        .collect();
    let hash = median_secs(runs, || {
        let digests: Vec<[u8; 32]> = sections
            .par_iter()
            .map(|b| Sha256::digest(b).into())
            .collect();
        std::hint::black_box(digests);
    });
    let gb = size / 1e9;
    let threads = rayon::current_num_threads();
    println!("GPT-2 124M training checkpoint, {gb:.2} GB, {threads} thread(s), median of {runs}:");
    println!(
        "  save (hash + write + fsync + rename)   {save:6.2} s   {:5.2} GB/s",
        gb / save
    );
    println!(
        "  read the file (page cache)             {read:6.2} s   {:5.2} GB/s",
        gb / read
    );
    println!(
        "  Checkpoint::load (read + verify)       {load:6.2} s   {:5.2} GB/s",
        gb / load
    );
    println!("  load + rebuild the model               {restore:6.2} s");
    println!(
        "  SHA-256 of the sections alone          {hash:6.2} s   {:5.2} GB/s",
        gb / hash
    );
    println!(
        "  verification: {:.0}% of Checkpoint::load, {:.0}% of load + rebuild",
        100.0 * hash / load,
        100.0 * hash / restore
    );
}
