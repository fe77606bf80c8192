//! Property tests: for any valid UTF-8, `decode(encode(s)) == s`, and the ids equal those of
//! the Hugging Face `tokenizers` crate (an independent implementation with a real regex).

use std::path::Path;
use std::sync::OnceLock;

use llm_bpe::{pretokenize, Tokenizer};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(Tokenizer::gpt2)
}

fn hf() -> &'static tokenizers::Tokenizer {
    static HF: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    HF.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/gpt2/tokenizer.json");
        tokenizers::Tokenizer::from_file(path).unwrap()
    })
}

/// Text fragments that stress the tokenizer: every kind the issue names, and then some.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        // Any Unicode scalar value at all.
        any::<char>().prop_map(String::from),
        // ASCII words, with GPT-2's contractions nearby.
        "[A-Za-z]{1,12}",
        "'(s|t|re|ve|m|ll|d|S|x)",
        // Emoji, including ZWJ sequences and skin tones.
        prop::sample::select(vec!["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🦀"]).prop_map(String::from),
        // CJK, Hangul, Cyrillic, Arabic, Devanagari.
        "[\u{4e00}-\u{9fff}]{1,6}",
        "[\u{ac00}-\u{d7a3}]{1,4}",
        "[а-яА-Я]{1,8}",
        "[\u{0600}-\u{06ff}]{1,5}",
        "[\u{0900}-\u{097f}]{1,5}",
        // Letters followed by combining marks.
        "[a-z][\u{0300}-\u{036f}]{1,3}",
        // Control characters, and Windows line ends.
        "[\u{0}-\u{1f}\u{7f}\u{85}]{1,4}",
        Just("\r\n".to_string()),
        // Long runs of whitespace, mixed whitespace, and digits.
        (1usize..400).prop_map(|n| " ".repeat(n)),
        "[ \t\n\r\u{a0}\u{3000}]{1,40}",
        "[0-9]{1,300}",
        "[0-9０-９]{1,10}",
        // Punctuation runs.
        "[!-/:-@\\[-`{-~]{1,10}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode(s in text()) {
        let ids = tok().encode_ordinary(&s);
        prop_assert_eq!(tok().decode(&ids).unwrap(), s);
    }

    #[test]
    fn ids_match_huggingface(s in text()) {
        prop_assume!(!s.contains("<|endoftext|>"));
        let ours = tok().encode_ordinary(&s);
        let theirs = hf().encode(s.as_str(), false).unwrap().get_ids().to_vec();
        prop_assert_eq!(ours, theirs, "text {:?}, pieces {:?}", s, pretokenize(&s).collect::<Vec<_>>());
    }

    #[test]
    fn stream_decoding_equals_decoding(s in text()) {
        let ids = tok().encode_ordinary(&s);
        let mut stream = tok().stream_decoder();
        let mut out = String::new();
        for id in ids {
            out += &stream.push(id).unwrap();
        }
        out += &stream.finish();
        prop_assert_eq!(out, s);
    }

    #[test]
    fn pieces_concatenate_to_the_text(s in text()) {
        prop_assert_eq!(pretokenize(&s).collect::<String>(), s);
    }
}
