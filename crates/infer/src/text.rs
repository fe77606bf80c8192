//! Streaming text: whole UTF-8 characters only, and nothing that may be the start of a stop
//! string until it is known not to be one.

use std::sync::Arc;

use llm_bpe::Tokenizer;

use crate::error::Result;

/// Turns a sequence's new tokens into text pieces, and finds its stop strings.
#[derive(Clone, Debug)]
pub struct TextStream {
    tokenizer: Arc<Tokenizer>,
    stop: Vec<String>,
    /// Bytes of an unfinished character.
    bytes: Vec<u8>,
    /// Text that may begin a stop string.
    held: String,
}

/// What one more token gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piece {
    /// Text that is now safe to show.
    pub text: String,
    /// Whether a stop string was reached (`text` ends before it).
    pub stopped: bool,
}

impl TextStream {
    pub fn new(tokenizer: Arc<Tokenizer>, stop: Vec<String>) -> Self {
        TextStream {
            tokenizer,
            stop,
            bytes: Vec::new(),
            held: String::new(),
        }
    }

    /// Adds one token. Ids the tokenizer does not know (a padded vocabulary) add nothing.
    pub fn push(&mut self, id: u32) -> Result<Piece> {
        if let Ok(b) = self.tokenizer.token_bytes(id) {
            self.bytes.extend_from_slice(b);
        }
        let complete = take_complete(&mut self.bytes);
        self.held.push_str(&complete);
        Ok(self.release())
    }

    /// Ends the stream: what was held back, and any unfinished character as U+FFFD.
    pub fn finish(mut self) -> String {
        self.held.push_str(&String::from_utf8_lossy(&self.bytes));
        match self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            Some(at) => self.held[..at].to_string(),
            None => self.held,
        }
    }

    fn release(&mut self) -> Piece {
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Piece {
                text,
                stopped: true,
            };
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stop.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let text = self.held[..keep].to_string();
        self.held.drain(..keep);
        Piece {
            text,
            stopped: false,
        }
    }
}

/// The complete characters at the front of `bytes` (invalid bytes become U+FFFD); an
/// unfinished character at the end stays.
fn take_complete(bytes: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                bytes.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).expect("valid prefix"));
                match e.error_len() {
                    None => {
                        bytes.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_held_back_then_cut() {
        let tok = Arc::new(Tokenizer::gpt2());
        let ids = tok.encode("Hello world. The end\n\nQ: next").unwrap();
        let mut s = TextStream::new(tok.clone(), vec!["\n\nQ:".into()]);
        let mut shown = String::new();
        for &id in &ids {
            let p = s.push(id).unwrap();
            shown += &p.text;
            assert!(
                !shown.contains('\n') || p.stopped,
                "a possible stop start leaked: {shown:?}"
            );
            if p.stopped {
                break;
            }
        }
        assert_eq!(shown, "Hello world. The end");
    }

    #[test]
    fn characters_are_never_split() {
        let tok = Arc::new(Tokenizer::gpt2());
        let mut s = TextStream::new(tok.clone(), vec![]);
        let mut shown = String::new();
        for id in tok.encode("naïve 😀 ok").unwrap() {
            shown += &s.push(id).unwrap().text;
        }
        shown += &s.finish();
        assert_eq!(shown, "naïve 😀 ok");
    }
}
