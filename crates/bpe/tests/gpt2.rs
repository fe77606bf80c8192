//! Exactness of the GPT-2 tokenizer: OpenAI's reference ids, whole corpora, and an id-for-id
//! cross-check with the Hugging Face `tokenizers` crate.

use std::path::{Path, PathBuf};

use llm_bpe::{Allowed, BpeError, Tokenizer, END_OF_TEXT_ID};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn corpus(name: &str) -> String {
    std::fs::read_to_string(assets().join("data").join(name)).unwrap()
}

fn hf() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(assets().join("gpt2/tokenizer.json")).unwrap()
}

fn hf_ids(hf: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    hf.encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn reference_sentences() {
    let tok = Tokenizer::gpt2();
    let cases: &[(&str, &[u32])] = &[
        ("Hello, world", &[15496, 11, 995]),
        ("Every effort moves you", &[6109, 3626, 6100, 345]),
        ("Every day holds a", &[6109, 1110, 6622, 257]),
        (
            "Hey, how are you doing today?",
            &[10814, 11, 703, 389, 345, 1804, 1909, 30],
        ),
    ];
    for (text, ids) in cases {
        assert_eq!(tok.encode(text).unwrap(), *ids, "{text:?}");
        assert_eq!(tok.decode(ids).unwrap(), *text);
    }
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eot_id(), Some(END_OF_TEXT_ID));
}

#[test]
fn special_token_sentence_from_provenance() {
    let tok = Tokenizer::gpt2();
    let text = "Hello, this is a test sentence from theouterspace. <|endoftext|> It's the last he painted, you know,";
    let expected = [
        15496, 11, 428, 318, 257, 1332, 6827, 422, 262, 280, 1010, 10223, 13, 220, 50256, 632, 338,
        262, 938, 339, 13055, 11, 345, 760, 11,
    ];
    assert_eq!(tok.encode_with(text, Allowed::All).unwrap(), expected);
    assert_eq!(
        tok.encode_with(text, Allowed::Only(&["<|endoftext|>"]))
            .unwrap(),
        expected
    );
    // The default policy refuses special-token text, and says where it is.
    match tok.encode(text) {
        Err(BpeError::DisallowedSpecial { token, offset }) => {
            assert_eq!(token, "<|endoftext|>");
            assert_eq!(offset, text.find("<|").unwrap());
        }
        other => panic!("expected DisallowedSpecial, got {other:?}"),
    }
    // As ordinary text it is just characters.
    let plain = tok.encode_with(text, Allowed::AsText).unwrap();
    assert!(!plain.contains(&50256));
    assert_eq!(plain, tok.encode_ordinary(text));
    assert_eq!(tok.decode(&plain).unwrap(), text);
}

#[test]
fn the_verdict() {
    let tok = Tokenizer::gpt2();
    let text = corpus("the-verdict.txt");
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids.len(), 5145);
    assert_eq!(
        ids[..10],
        [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138]
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
}

#[test]
fn large_corpora_match_counts_and_huggingface() {
    let tok = Tokenizer::gpt2();
    let hf = hf();
    for (name, count) in [("tinyshakespeare.txt", 338_025), ("moby-dick.txt", 317_756)] {
        let text = corpus(name);
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids.len(), count, "{name}");
        assert_eq!(
            ids,
            hf_ids(&hf, &text),
            "{name}: ids differ from tokenizers"
        );
        assert_eq!(
            tok.encode_parallel(&text, Allowed::None).unwrap(),
            ids,
            "{name}"
        );
        assert_eq!(tok.decode(&ids).unwrap(), text, "{name}");
    }
}

#[test]
fn other_corpora_match_huggingface() {
    let tok = Tokenizer::gpt2();
    let hf = hf();
    for (name, count) in [
        ("instruction-data.json", 80_559),
        ("SMSSpamCollection.tsv", 144_487),
    ] {
        let text = corpus(name);
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids.len(), count, "{name}");
        assert_eq!(ids, hf_ids(&hf, &text), "{name}");
    }
}

#[test]
fn whole_piece_lookup_is_exact_for_gpt2() {
    // Every GPT-2 token merges back into itself from its own bytes, so looking a whole
    // pre-token up in the vocabulary gives what OpenAI's merge loop would.
    assert_eq!(Tokenizer::gpt2().non_canonical_tokens(), 0);
}

#[test]
fn all_loaders_agree() {
    let builtin = Tokenizer::gpt2();
    let from_dir = Tokenizer::from_dir(assets().join("gpt2")).unwrap();
    let from_json = Tokenizer::from_tokenizer_json(assets().join("gpt2/tokenizer.json")).unwrap();
    let by_name = Tokenizer::load("gpt2").unwrap();
    let text = corpus("the-verdict.txt");
    let ids = builtin.encode(&text).unwrap();
    for tok in [&from_dir, &from_json, &by_name] {
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.eot_id(), Some(50256));
        assert_eq!(tok.encode(&text).unwrap(), ids);
    }
}

#[test]
fn batch_encoding_matches_one_by_one() {
    let tok = Tokenizer::gpt2();
    let text = corpus("tinyshakespeare.txt");
    let docs: Vec<&str> = text.split("\n\n").collect();
    let batch = tok.encode_batch(&docs, Allowed::None).unwrap();
    assert_eq!(batch.len(), docs.len());
    for (doc, ids) in docs.iter().zip(&batch).step_by(97) {
        assert_eq!(&tok.encode(doc).unwrap(), ids);
    }
}

#[test]
fn parallel_encoding_keeps_special_tokens() {
    let tok = Tokenizer::gpt2();
    let text = corpus("the-verdict.txt").repeat(8);
    let joined = format!("{text}<|endoftext|>{text}");
    let serial = tok.encode_with(&joined, Allowed::All).unwrap();
    assert_eq!(tok.encode_parallel(&joined, Allowed::All).unwrap(), serial);
    assert!(tok.encode_parallel(&joined, Allowed::None).is_err());
}

#[test]
fn bad_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Missing directory content.
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Missing merges file.
    let vocab = dir.path().join("vocab.json");
    std::fs::copy(assets().join("gpt2/vocab.json"), &vocab).unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("merges.txt"), "{err}");
    // Corrupt vocabulary.
    std::fs::copy(
        assets().join("gpt2/merges.txt"),
        dir.path().join("merges.txt"),
    )
    .unwrap();
    std::fs::write(&vocab, "{\"a\": 0, ").unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");
    // A vocabulary whose merges refer to tokens it lacks.
    std::fs::write(&vocab, "{\"a\": 0}").unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("merges.txt"), "{err}");
    // A corrupt tokenizer.json.
    let json = dir.path().join("tokenizer.json");
    std::fs::write(&json, "{\"model\": {\"type\": \"WordPiece\"}}").unwrap();
    let err = Tokenizer::load(json.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    // A name that is neither `gpt2` nor a path.
    let err = Tokenizer::load("no/such/tokenizer").unwrap_err();
    assert!(err.to_string().contains("no/such/tokenizer"), "{err}");
}

#[test]
fn out_of_range_ids_name_the_id() {
    let tok = Tokenizer::gpt2();
    let err = tok.decode(&[15496, 50257]).unwrap_err();
    assert!(err.to_string().contains("50257"), "{err}");
    assert!(tok.decode(&[u32::MAX]).is_err());
}

#[test]
fn decode_of_a_split_character_is_lossy_not_an_error() {
    let tok = Tokenizer::gpt2();
    let ids = tok.encode("😀").unwrap();
    assert_eq!(tok.decode(&ids[..1]).unwrap(), "\u{fffd}");
}
