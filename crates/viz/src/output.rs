//! Where pictures and files leave the crate: a drawing encoded as PNG, and every output
//! written atomically (a temporary file, then a rename), so nothing is ever half-written.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, VizError};

/// Draws onto a white `width × height` RGB canvas and encodes it as PNG.
pub fn render_png<T>(
    width: u32,
    height: u32,
    what: &str,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<T>,
) -> Result<(Vec<u8>, T)> {
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    let drawn = {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let drawn = draw(&root)?;
        root.present().map_err(|e| VizError::draw(what, e))?;
        drawn
    };
    Ok((encode_png(&pixels, width, height, what)?, drawn))
}

fn encode_png(rgb: &[u8], width: u32, height: u32, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let fail = |e: png::EncodingError| VizError::draw(what, e);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Writes `dir/name` atomically (a temporary file, then a rename).
pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    llm_common::fs::atomic_write(&path, bytes).map_err(|e| VizError::io(&path, e))?;
    Ok(path)
}
