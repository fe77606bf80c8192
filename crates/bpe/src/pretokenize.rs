//! GPT-2's pre-tokenizer: splits text into the pieces that BPE then encodes one by one.
//!
//! GPT-2 splits with this regex (OpenAI's `encoder.py`, tiktoken's `r50k_base`):
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! A regex engine with look-ahead is slow, so [`Pretokens`] is the same pattern written out
//! by hand as a scanner. The Unicode classes `\p{L}`, `\p{N}` and `\s` are taken from
//! `regex-syntax`, the tables the `regex` crate (and so tiktoken and `tokenizers`) use, so
//! every character classifies exactly as it does there. Tests cross-check the scanner with
//! the `tokenizers` crate's regex on random text.

use std::sync::OnceLock;

/// The GPT-2 split pattern, for engines that take a regex (HF `tokenizer.json`, tiktoken).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The four classes the pattern distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    /// Neither letter, number nor whitespace: punctuation, symbols, emoji, controls.
    Other,
}

struct Classifier {
    ascii: [Class; 128],
    letters: Vec<(u32, u32)>,
    numbers: Vec<(u32, u32)>,
    spaces: Vec<(u32, u32)>,
}

/// The code-point ranges of a one-class regex, as the `regex` crate's tables define it.
fn unicode_ranges(class: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class as HirClass, HirKind};
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .expect("a valid built-in class");
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => unreachable!("{class} parsed to {other:?}"),
    }
}

fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    // Ranges are sorted and disjoint: find the last one starting at or before `c`.
    let i = ranges.partition_point(|&(start, _)| start <= c);
    i > 0 && c <= ranges[i - 1].1
}

impl Classifier {
    fn get() -> &'static Classifier {
        static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
        CLASSIFIER.get_or_init(|| {
            let mut c = Classifier {
                ascii: [Class::Other; 128],
                letters: unicode_ranges(r"\p{L}"),
                numbers: unicode_ranges(r"\p{N}"),
                spaces: unicode_ranges(r"\s"),
            };
            for b in 0..128u8 {
                c.ascii[b as usize] = c.slow(b as u32);
            }
            c
        })
    }

    fn slow(&self, c: u32) -> Class {
        if in_ranges(&self.letters, c) {
            Class::Letter
        } else if in_ranges(&self.numbers, c) {
            Class::Number
        } else if in_ranges(&self.spaces, c) {
            Class::Space
        } else {
            Class::Other
        }
    }

    /// The class and UTF-8 length of the character starting at byte `i`.
    #[inline]
    fn at(&self, text: &str, i: usize) -> (Class, usize) {
        let b = text.as_bytes()[i];
        if b < 0x80 {
            (self.ascii[b as usize], 1)
        } else {
            let c = text[i..].chars().next().expect("i is a char boundary");
            (self.slow(c as u32), c.len_utf8())
        }
    }
}

/// Whether `c` is whitespace (`\s`) as GPT-2's pattern sees it.
pub(crate) fn is_space(c: char) -> bool {
    Classifier::get().slow(c as u32) == Class::Space
}

/// Iterator over the GPT-2 pieces of a text. Concatenated, the pieces give the text back.
pub struct Pretokens<'a> {
    text: &'a str,
    pos: usize,
    classes: &'static Classifier,
}

/// Splits `text` into GPT-2 pre-tokens.
pub fn pretokenize(text: &str) -> Pretokens<'_> {
    Pretokens {
        text,
        pos: 0,
        classes: Classifier::get(),
    }
}

impl<'a> Pretokens<'a> {
    /// End of the run of `class` characters starting at `i`.
    #[inline]
    fn run_end(&self, mut i: usize, class: Class) -> usize {
        let bytes = self.text.as_bytes();
        while i < bytes.len() {
            let (c, len) = self.classes.at(self.text, i);
            if c != class {
                break;
            }
            i += len;
        }
        i
    }

    /// `\s+(?!\S)|\s+` at `start`: the whitespace run, leaving its last character to the
    /// next piece when a non-space follows and the run is longer than one character.
    fn whitespace_end(&self, start: usize) -> usize {
        let bytes = self.text.as_bytes();
        let mut i = start;
        let mut last = start;
        while i < bytes.len() {
            let (c, len) = self.classes.at(self.text, i);
            if c != Class::Space {
                break;
            }
            last = i;
            i += len;
        }
        if i == bytes.len() || last == start {
            i
        } else {
            last
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `i` (which holds an apostrophe).
    #[inline]
    fn contraction_end(&self, i: usize) -> Option<usize> {
        let rest = &self.text.as_bytes()[i + 1..];
        match rest {
            [b's' | b't' | b'm' | b'd', ..] => Some(i + 2),
            [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => Some(i + 3),
            _ => None,
        }
    }

    fn piece_end(&self, start: usize) -> usize {
        let bytes = self.text.as_bytes();
        let first = bytes[start];
        if first == b'\'' {
            if let Some(end) = self.contraction_end(start) {
                return end;
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space, then a run.
        if first == b' ' && start + 1 < bytes.len() {
            return match self.classes.at(self.text, start + 1).0 {
                Class::Space => self.whitespace_end(start),
                run => self.run_end(start + 1, run),
            };
        }
        match self.classes.at(self.text, start).0 {
            Class::Space => self.whitespace_end(start),
            run => self.run_end(start, run),
        }
    }
}

impl<'a> Iterator for Pretokens<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = self.piece_end(start);
        debug_assert!(end > start);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// Chunk size for parallel encoding and counting.
const PARALLEL_CHUNK: usize = 1 << 16;

/// Cuts text into pieces of about [`PARALLEL_CHUNK`] bytes, only before a `\n` that follows a
/// non-whitespace character. No GPT-2 pre-token spans such a point, and the `\n` starts a
/// fresh match, so encoding the pieces separately gives the same ids.
pub(crate) fn safe_chunks(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut chunks = Vec::new();
    let mut start = 0;
    while text.len() - start > PARALLEL_CHUNK {
        let mut cut = start + PARALLEL_CHUNK;
        let found = loop {
            match bytes[cut..].iter().position(|&b| b == b'\n') {
                None => break None,
                Some(off) => {
                    let at = cut + off;
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(|c| !is_space(c)) {
                        break Some(at);
                    }
                    cut = at + 1;
                }
            }
        };
        match found {
            Some(at) if at > start => {
                chunks.push(&text[start..at]);
                start = at;
            }
            _ => break,
        }
    }
    chunks.push(&text[start..]);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pretokenize(s).collect()
    }

    #[test]
    fn words_punctuation_and_spaces() {
        assert_eq!(split("Hello, world"), ["Hello", ",", " world"]);
        assert_eq!(
            split("Hey, how are you?"),
            ["Hey", ",", " how", " are", " you", "?"]
        );
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a   "), ["a", "   "]);
        assert_eq!(split("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split("a \n b"), ["a", " \n", " b"]);
        assert_eq!(split(" "), [" "]);
    }

    #[test]
    fn contractions_and_numbers() {
        assert_eq!(
            split("I'm it's we'll"),
            ["I", "'m", " it", "'s", " we", "'ll"]
        );
        assert_eq!(split("'sa"), ["'s", "a"]);
        assert_eq!(split("!'s"), ["!'", "s"]);
        assert_eq!(split("x 'sa"), ["x", " '", "sa"]);
        assert_eq!(split("2024 is 12ab"), ["2024", " is", " 12", "ab"]);
        assert_eq!(split("ＡＢ１２"), ["ＡＢ", "１２"]);
    }

    #[test]
    fn unicode_classes() {
        assert_eq!(split("héllo wörld"), ["héllo", " wörld"]);
        assert_eq!(split("日本語 😀😀"), ["日本語", " 😀😀"]);
        // U+00A0 is whitespace but not the ASCII space that may prefix a word.
        assert_eq!(split("a\u{a0}b"), ["a", "\u{a0}", "b"]);
        // U+001C..U+001F are not `\s` in the regex crate.
        assert_eq!(split("a\u{1c}b"), ["a", "\u{1c}", "b"]);
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        let s = "  Mixed\tcase\r\n\r\n  with 3.14 and ’quotes’ — ok?!  ";
        assert_eq!(split(s).concat(), s);
    }
}
