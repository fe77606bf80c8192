//! `attention.html`: one self-contained page (no network, no CDN, everything inline) with
//! a layer selector, head toggles, a bertviz-style line view, a matrix view and the head
//! scores. The page draws on a canvas from the JSON embedded in it.

use serde::Serialize;

use crate::attention::AttentionFile;
use crate::error::{Result, VizError};
use crate::summary::HeadScores;

/// The page shows at most this many tokens (the first ones) unless asked otherwise: the
/// line view draws up to `n_head · t²/2` lines, and past a few hundred tokens neither the
/// browser nor a reader keeps up. `attention.json` always holds them all.
pub const PAGE_TOKENS: usize = 256;

const TEMPLATE: &str = include_str!("page/attention.html");
const DATA_SLOT: &str = "__ATTENTION_DATA__";
const TITLE_SLOT: &str = "__TITLE__";

/// What was left off the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cut {
    pub shown: usize,
    pub total: usize,
}

#[derive(Serialize)]
struct PageData<'a> {
    #[serde(flatten)]
    attention: &'a AttentionFile,
    cut: Option<Cut>,
    summary: &'a [HeadScores],
}

/// The page for `file` (cut to its first `max_tokens` tokens) and the head scores.
pub fn attention_page(
    file: &AttentionFile,
    summary: &[HeadScores],
    max_tokens: usize,
) -> Result<String> {
    let total = file.ids.len();
    let (mut shown, cut) = match total > max_tokens {
        true => (
            file.first_tokens(max_tokens),
            Some(Cut {
                shown: max_tokens,
                total,
            }),
        ),
        false => (file.clone(), None),
    };
    round_for_the_page(&mut shown);
    let data = PageData {
        attention: &shown,
        cut,
        summary,
    };
    let json = serde_json::to_string(&data).map_err(|e| VizError::draw("attention.html", e))?;
    // Inside <script>, `</script>` or `<!--` in a token would end the element early.
    let json = json.replace('<', "\\u003c");
    let title = format!("attention: {} ({} tokens)", file.model.name, total);
    // Split once, so neither value can be mistaken for the other's slot.
    let slots = TEMPLATE
        .split_once(TITLE_SLOT)
        .and_then(|(head, rest)| Some((head, rest.split_once(DATA_SLOT)?)));
    let (head, (middle, tail)) = slots.expect("the page template holds its two slots");
    Ok([head, &html_escape(&title), middle, &json, tail].concat())
}

/// Probabilities to 4 decimals (what a colour or a line's opacity can show): a third of
/// the page's size. `attention.json` keeps them exact.
fn round_for_the_page(file: &mut AttentionFile) {
    for p in file.attention.iter_mut().flatten().flatten().flatten() {
        *p = (*p * 1e4).round() / 1e4;
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
