//! A head's attention as a heatmap, and the PNG it is encoded as.
//!
//! Query rows run down, key columns run right, each cell from white (0) to dark blue (1);
//! the masked upper triangle (keys after the query) is light grey. Token labels sit on both
//! axes when the cells are tall enough to hold them, else on every k-th token.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use crate::attention::HeadMatrix;
use crate::error::{Result, VizError};
use crate::font;
use crate::output::render_png;

/// The colour of probability 1 (matplotlib's `Blues` at its darkest).
pub const FULL: RGBColor = RGBColor(8, 48, 107);
/// Keys after the query: masked, never attended to.
pub const MASKED: RGBColor = RGBColor(232, 232, 232);
const INK: RGBColor = RGBColor(40, 40, 40);

/// The colour of probability `p`: white → [`FULL`], linear.
pub fn heat(p: f32) -> RGBColor {
    let p = p.clamp(0.0, 1.0) as f64;
    let mix = |full: u8| (255.0 + (full as f64 - 255.0) * p).round() as u8;
    RGBColor(mix(FULL.0), mix(FULL.1), mix(FULL.2))
}

/// Where a heatmap's cells landed, in the picture's pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellGrid {
    pub left: i32,
    pub top: i32,
    /// Side of one cell, in pixels.
    pub cell: f64,
    pub n: usize,
}

impl CellGrid {
    /// The pixel at the centre of the cell for `query` (row) and `key` (column).
    pub fn center(&self, query: usize, key: usize) -> (i32, i32) {
        let at = |i: usize| ((i as f64 + 0.5) * self.cell) as i32;
        (self.left + at(key), self.top + at(query))
    }

    fn edge(&self, i: usize) -> i32 {
        (i as f64 * self.cell).round() as i32
    }
}

/// A token as an axis label: whitespace escapes made visible, long tokens shortened.
pub fn label(token: &str) -> String {
    const MAX_CHARS: usize = 14;
    let mut shown = String::new();
    for c in token.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\t' => shown.push_str("\\t"),
            '\r' => shown.push_str("\\r"),
            c if c.is_control() => shown.push('·'),
            c => shown.push(c),
        }
    }
    match shown.chars().count() > MAX_CHARS {
        true => shown.chars().take(MAX_CHARS - 1).chain(['…']).collect(),
        false => shown,
    }
}

/// Sizes of one heatmap panel.
#[derive(Clone, Copy, Debug)]
pub struct HeatStyle {
    /// Label font size, in pixels.
    pub font_px: u32,
}

impl HeatStyle {
    /// Room for the labels on one axis: the longest label's width, estimated.
    fn label_room(&self, tokens: &[String]) -> i32 {
        let chars = tokens.iter().map(|t| label(t).chars().count()).max();
        (chars.unwrap_or(1) as f64 * self.font_px as f64 * 0.62) as i32 + 8
    }
}

/// Draws `matrix` with its `title` and token labels into `area`, as large as fits.
pub fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    matrix: &HeadMatrix,
    tokens: &[String],
    title: &str,
    style: HeatStyle,
) -> Result<CellGrid> {
    font::register();
    let fail = |e| VizError::draw(title, e);
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let fs = style.font_px as i32;
    let title_h = fs * 2;
    let room = style.label_room(tokens);
    let side = (w - room - 8).min(h - title_h - room - 4).max(1);
    let n = matrix.len().max(1);
    let grid = CellGrid {
        left: room + (w - room - 8 - side).max(0) / 2,
        top: title_h,
        cell: side as f64 / n as f64,
        n,
    };
    let text = (font::FAMILY, style.font_px).into_font().color(&INK);
    area.draw(&Text::new(
        title.to_string(),
        (grid.left + side / 2, fs / 2),
        text.clone().pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(fail)?;
    draw_cells(area, matrix, &grid).map_err(fail)?;
    draw_labels(area, tokens, &grid, style).map_err(fail)?;
    Ok(grid)
}

fn draw_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    matrix: &HeadMatrix,
    grid: &CellGrid,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = grid.n;
    for q in 0..n {
        let (y0, y1) = (grid.top + grid.edge(q), grid.top + grid.edge(q + 1) - 1);
        for k in 0..n {
            let (x0, x1) = (grid.left + grid.edge(k), grid.left + grid.edge(k + 1) - 1);
            let colour = match matrix.get(q).and_then(|row| row.get(k)) {
                Some(&p) => heat(p),
                None => MASKED,
            };
            area.draw(&Rectangle::new(
                [(x0, y0), (x1.max(x0), y1.max(y0))],
                colour.filled(),
            ))?;
        }
    }
    let (x1, y1) = (grid.left + grid.edge(n), grid.top + grid.edge(n));
    area.draw(&Rectangle::new(
        [(grid.left - 1, grid.top - 1), (x1, y1)],
        INK.stroke_width(1),
    ))
}

/// Query labels to the left of each row, key labels under each column (reading upwards);
/// every `k`-th only when cells are smaller than the text.
fn draw_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    tokens: &[String],
    grid: &CellGrid,
    style: HeatStyle,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let every = ((style.font_px as f64 * 1.05) / grid.cell).ceil().max(1.0) as usize;
    let font = (font::FAMILY, style.font_px).into_font().color(&INK);
    let bottom = grid.top + grid.edge(grid.n) + 4;
    for (i, token) in tokens.iter().enumerate().step_by(every) {
        let (x, y) = grid.center(i, i);
        let text = label(token);
        area.draw(&Text::new(
            text.clone(),
            (grid.left - 4, y),
            font.clone().pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        area.draw(&Text::new(
            text,
            (x, bottom),
            font.clone()
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// One head at a readable size: `(png, where its cells are)`.
pub fn head_png(
    matrix: &HeadMatrix,
    tokens: &[String],
    title: &str,
) -> Result<(Vec<u8>, CellGrid)> {
    let style = HeatStyle { font_px: 13 };
    let side = (matrix.len() as u32 * 18).clamp(360, 1600);
    let room = style.label_room(tokens) as u32;
    render_png(side + room + 16, side + room + 2 * 13 + 8, title, |root| {
        root.fill(&WHITE).map_err(|e| VizError::draw(title, e))?;
        draw_heatmap(root, matrix, tokens, title, style)
    })
}

/// Every head of a layer in a grid of heatmaps, under a caption: the seed's figure.
pub fn layer_png(
    heads: &[(usize, &HeadMatrix)],
    tokens: &[String],
    caption: &str,
) -> Result<Vec<u8>> {
    let style = HeatStyle { font_px: 11 };
    let cols = (heads.len() as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (heads.len() as u32).div_ceil(cols).max(1);
    let side = (tokens.len() as u32 * 12).clamp(180, 480);
    let room = style.label_room(tokens) as u32;
    let (panel_w, panel_h) = (side + room + 16, side + room + 2 * 11 + 8);
    let (caption_h, fail) = (40, |e| VizError::draw(caption, e));
    let (png, ()) = render_png(
        panel_w * cols,
        panel_h * rows + caption_h,
        caption,
        |root| {
            font::register();
            root.fill(&WHITE).map_err(fail)?;
            let body = root
                .titled(caption, (font::FAMILY, 20).into_font().color(&INK))
                .map_err(fail)?;
            let panels = body.split_evenly((rows as usize, cols as usize));
            for (panel, (head, matrix)) in panels.iter().zip(heads) {
                draw_heatmap(panel, matrix, tokens, &format!("head {head}"), style)?;
            }
            Ok(())
        },
    )?;
    Ok(png)
}
