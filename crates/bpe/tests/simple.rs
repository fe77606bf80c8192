//! The walkthrough's word-level tokenizer, on `the-verdict.txt`.

use std::path::Path;

use llm_bpe::{simple_split, SimpleTokenizer};

#[test]
fn the_verdict_numbers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/data/the-verdict.txt");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.chars().count(), 20_479);

    let words = simple_split(&text);
    assert_eq!(words.len(), 4_649);
    let distinct: std::collections::BTreeSet<_> = words.iter().collect();
    assert_eq!(distinct.len(), 1_159);

    let tok = SimpleTokenizer::from_corpus(&text);
    assert_eq!(tok.vocab_size(), 1_161);
    assert_eq!(tok.id("<|endoftext|>"), Some(1_159));
    assert_eq!(tok.unk_id(), 1_160);

    let ids = tok.encode(&text);
    assert_eq!(ids.len(), 4_649);
    assert!(!ids.contains(&tok.unk_id()));

    let sample = "\"It's the last he painted, you know,\" Mrs. Gisburn said with pardonable pride.";
    let ids = tok.encode(sample);
    // The book's output: decoding cannot know which side of a quote the space was on.
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "\" It' s the last he painted, you know,\" Mrs. Gisburn said with pardonable pride."
    );

    let unknown = tok.encode("Hello, do you like tea?");
    assert_eq!(unknown[0], tok.unk_id());
    assert_eq!(tok.decode(&unknown).unwrap(), "<|unk|>, do you like tea?");
}
