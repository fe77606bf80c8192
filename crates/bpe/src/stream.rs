//! Streaming decode: print tokens as they are generated without splitting a character.
//!
//! One token can end in the middle of a multi-byte UTF-8 character (an emoji is often two or
//! three GPT-2 tokens). [`StreamDecoder`] holds such a tail back until the character is whole.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Turns a stream of token ids into text, one complete character at a time.
///
/// ```
/// use llm_bpe::Tokenizer;
/// let tok = Tokenizer::gpt2();
/// let mut stream = tok.stream_decoder();
/// let mut text = String::new();
/// for id in tok.encode("naïve 😀").unwrap() {
///     text += &stream.push(id).unwrap();
/// }
/// text += &stream.finish();
/// assert_eq!(text, "naïve 😀");
/// ```
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token and returns the text that is now complete (possibly empty).
    /// Bytes that can never become valid UTF-8 are emitted as U+FFFD.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.pending
            .extend_from_slice(self.tokenizer.token_bytes(id)?);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // Invalid bytes: replace them and carry on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: any unfinished character is emitted as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use crate::Tokenizer;

    #[test]
    fn holds_back_partial_characters() {
        let tok = Tokenizer::gpt2();
        let ids = tok.encode("😀").unwrap();
        assert!(ids.len() > 1, "the emoji spans several tokens: {ids:?}");
        let mut s = tok.stream_decoder();
        for &id in &ids[..ids.len() - 1] {
            assert_eq!(s.push(id).unwrap(), "");
        }
        assert!(s.has_pending());
        assert_eq!(s.push(*ids.last().unwrap()).unwrap(), "😀");
        assert!(!s.has_pending());
    }

    #[test]
    fn unfinished_character_becomes_replacement() {
        let tok = Tokenizer::gpt2();
        let ids = tok.encode("😀").unwrap();
        let mut s = tok.stream_decoder();
        assert_eq!(s.push(ids[0]).unwrap(), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn out_of_range_id_is_an_error() {
        let tok = Tokenizer::gpt2();
        let err = tok.stream_decoder().push(60_000).unwrap_err();
        assert!(err.to_string().contains("60000"));
    }
}
