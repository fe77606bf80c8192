//! Training a vocabulary, saving it as `tokenizer.json`, and loading it back here and in the
//! Hugging Face `tokenizers` crate.

use std::path::Path;

use llm_bpe::{train, Allowed, Tokenizer, TrainerConfig};

fn shakespeare() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/data/tinyshakespeare.txt");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn train_save_and_reload() {
    let text = shakespeare();
    let tok = train(&[&text], &TrainerConfig::new(1024)).unwrap();
    assert_eq!(tok.vocab_size(), 1024);
    assert_eq!(tok.eot_id(), Some(1023));

    let ids = tok.encode(&text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // A trained vocabulary compresses its own corpus far better than raw bytes.
    assert!(
        ids.len() * 2 < text.len(),
        "{} ids for {} bytes",
        ids.len(),
        text.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save_tokenizer_json(&path).unwrap();

    let reloaded = Tokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(reloaded.vocab_size(), 1024);
    assert_eq!(reloaded.encode(&text).unwrap(), ids);
    // Loading the directory finds the tokenizer.json too.
    assert_eq!(Tokenizer::from_dir(dir.path()).unwrap().vocab_size(), 1024);

    // The file is a real Hugging Face tokenizer: the tokenizers crate gives the same ids,
    // special token included.
    let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_eq!(hf.get_vocab_size(true), 1024);
    let sample =
        "ROMEO:\nBut, soft! what light through yonder window breaks?<|endoftext|>Zebra 1234 😀";
    assert_eq!(
        hf.encode(sample, false).unwrap().get_ids(),
        reloaded.encode_with(sample, Allowed::All).unwrap()
    );
}

#[test]
fn training_is_deterministic() {
    let text = shakespeare();
    let a = train(&[&text[..200_000]], &TrainerConfig::new(600)).unwrap();
    let b = train(&[&text[..200_000]], &TrainerConfig::new(600)).unwrap();
    for id in 0..600 {
        assert_eq!(a.token_bytes(id).unwrap(), b.token_bytes(id).unwrap());
    }
}

#[test]
fn special_token_text_is_not_learned() {
    let text = "<|endoftext|>".repeat(50) + "hello hello";
    let tok = train(&[&text], &TrainerConfig::new(300)).unwrap();
    assert_eq!(
        tok.encode_with("<|endoftext|>", Allowed::All).unwrap(),
        [tok.eot_id().unwrap()]
    );
    // No learned token spells part of the special token.
    assert!(
        (256..tok.vocab_size() as u32 - 1).all(|id| !tok.token_bytes(id).unwrap().contains(&b'|'))
    );
}
