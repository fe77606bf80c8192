//! Automatic scores of a generated response against a reference (no LLM judge is reachable
//! offline): SQuAD's token-level F1 and ROUGE-L, both over lower-cased alphanumeric words.

/// Lower-cased runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn f_measure(overlap: usize, predicted: usize, reference: usize) -> f64 {
    if overlap == 0 {
        return 0.0;
    }
    let (p, r) = (
        overlap as f64 / predicted as f64,
        overlap as f64 / reference as f64,
    );
    2.0 * p * r / (p + r)
}

/// Token-level F1 (SQuAD): the harmonic mean of precision and recall of the words the two
/// texts share, counted with multiplicity. Two empty texts score 1.
pub fn token_f1(predicted: &str, reference: &str) -> f64 {
    let (p, r) = (words(predicted), words(reference));
    if p.is_empty() || r.is_empty() {
        return (p.is_empty() && r.is_empty()) as u8 as f64;
    }
    let mut left = r.clone();
    let mut overlap = 0;
    for w in &p {
        if let Some(i) = left.iter().position(|x| x == w) {
            left.swap_remove(i);
            overlap += 1;
        }
    }
    f_measure(overlap, p.len(), r.len())
}

/// ROUGE-L: the F-measure (β = 1) of the longest common subsequence of words.
pub fn rouge_l(predicted: &str, reference: &str) -> f64 {
    let (p, r) = (words(predicted), words(reference));
    if p.is_empty() || r.is_empty() {
        return (p.is_empty() && r.is_empty()) as u8 as f64;
    }
    // LCS by dynamic programming, one row at a time.
    let mut prev = vec![0usize; r.len() + 1];
    for a in &p {
        let mut row = vec![0usize; r.len() + 1];
        for (j, b) in r.iter().enumerate() {
            row[j + 1] = if a == b {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        prev = row;
    }
    f_measure(prev[r.len()], p.len(), r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_computed_values() {
        assert_eq!(token_f1("The cat sat.", "the cat sat"), 1.0);
        // 2 shared of 3 predicted and 4 reference words: P 2/3, R 1/2, F1 4/7.
        let f = token_f1("a cat sat", "the cat sat down");
        assert!((f - 4.0 / 7.0).abs() < 1e-12, "{f}");
        assert_eq!(token_f1("dog", "cat"), 0.0);
        // LCS of "a b c d" and "a c b d" is 3 words: P = R = 3/4.
        let r = rouge_l("a b c d", "a c b d");
        assert!((r - 0.75).abs() < 1e-12, "{r}");
        // Order matters for ROUGE-L, not for F1.
        assert_eq!(token_f1("d c b a", "a b c d"), 1.0);
        assert!(rouge_l("d c b a", "a b c d") < 0.3);
        assert_eq!(rouge_l("", ""), 1.0);
        assert_eq!(rouge_l("x", ""), 0.0);
    }
}
