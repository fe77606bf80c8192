//! Special tokens such as `<|endoftext|>`, and the policy for meeting their text in input.
//!
//! The policy is tiktoken's: text that spells a special token is an error unless the caller
//! says otherwise. Silently turning user text into control tokens is a classic footgun (a
//! document that merely mentions `<|endoftext|>` would end itself).

use crate::error::{BpeError, Result};

/// GPT-2's end-of-text token, `<|endoftext|>`.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's id for [`END_OF_TEXT`].
pub const END_OF_TEXT_ID: u32 = 50256;

/// What to do with special-token text found in the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// Any special-token text is an error (tiktoken's default).
    #[default]
    None,
    /// Every special token in the text becomes its special id.
    All,
    /// These special tokens become their ids; any other special-token text is an error.
    Only(&'a [&'a str]),
    /// Special-token text is encoded as ordinary text (tiktoken's `encode_ordinary`).
    AsText,
}

/// One special token: its text and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialToken {
    pub text: String,
    pub id: u32,
}

/// A special token found in a text: byte range and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub id: u32,
}

/// Finds the special tokens in `text` that `allowed` turns into ids, leftmost first (longest on
/// a tie), and fails on any that it does not allow.
pub(crate) fn find_specials(
    specials: &[SpecialToken],
    text: &str,
    allowed: Allowed<'_>,
) -> Result<Vec<Found>> {
    if allowed == Allowed::AsText || specials.is_empty() {
        return Ok(Vec::new());
    }
    if let Allowed::Only(names) = allowed {
        if let Some(bad) = names
            .iter()
            .find(|n| !specials.iter().any(|s| s.text == **n))
        {
            return Err(BpeError::UnknownSpecial {
                token: bad.to_string(),
            });
        }
    }
    let is_allowed = |s: &SpecialToken| match allowed {
        Allowed::All => true,
        Allowed::Only(names) => names.contains(&s.text.as_str()),
        Allowed::None | Allowed::AsText => false,
    };
    // Next occurrence of each special at or after the cursor (None once exhausted).
    let mut next: Vec<Option<usize>> = specials.iter().map(|s| text.find(&s.text)).collect();
    let mut found = Vec::new();
    loop {
        let best = next
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|at| (at, std::cmp::Reverse(specials[i].text.len()), i)))
            .min();
        let Some((start, _, i)) = best else { break };
        let s = &specials[i];
        if !is_allowed(s) {
            return Err(BpeError::DisallowedSpecial {
                token: s.text.clone(),
                offset: start,
            });
        }
        let end = start + s.text.len();
        found.push(Found {
            start,
            end,
            id: s.id,
        });
        for (j, at) in next.iter_mut().enumerate() {
            if matches!(*at, Some(a) if a < end) {
                *at = text[end..].find(&specials[j].text).map(|a| a + end);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Vec<SpecialToken> {
        vec![
            SpecialToken {
                text: "<|a|>".into(),
                id: 10,
            },
            SpecialToken {
                text: "<|ab|>".into(),
                id: 11,
            },
        ]
    }

    #[test]
    fn policy() {
        let s = specials();
        let text = "x<|a|>y<|ab|>z<|a|>";
        let err = find_specials(&s, text, Allowed::None).unwrap_err();
        assert!(matches!(err, BpeError::DisallowedSpecial { offset: 1, .. }));
        let all = find_specials(&s, text, Allowed::All).unwrap();
        assert_eq!(all.iter().map(|f| f.id).collect::<Vec<_>>(), [10, 11, 10]);
        assert_eq!((all[1].start, all[1].end), (7, 13));
        let only = find_specials(&s, text, Allowed::Only(&["<|ab|>"]));
        assert!(matches!(
            only,
            Err(BpeError::DisallowedSpecial { offset: 1, .. })
        ));
        let only = find_specials(&s, "y<|ab|>", Allowed::Only(&["<|ab|>"])).unwrap();
        assert_eq!(only.len(), 1);
        assert!(find_specials(&s, text, Allowed::AsText).unwrap().is_empty());
        assert!(matches!(
            find_specials(&s, text, Allowed::Only(&["<|zz|>"])),
            Err(BpeError::UnknownSpecial { .. })
        ));
    }
}
