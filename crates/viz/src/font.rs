//! The one font every picture uses, compiled in: DejaVu Sans (`assets/fonts/`, with its
//! provenance and licence). plotters draws text only with a registered font; registering
//! ours means no picture depends on the fonts a machine happens to have.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name every drawing asks for.
pub(crate) const FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers DejaVu Sans as [`FAMILY`] (once per process; later calls are free).
pub(crate) fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The bytes are a valid TrueType file checked into the repository: a failure here
        // is a build defect, not bad input.
        plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS)
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans is not a valid font"));
    });
}
