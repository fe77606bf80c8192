//! `viz run`: a run's training curves from its `metrics.jsonl`, several runs on shared
//! axes, as PNG and SVG.
//!
//! Every numeric field of a metrics line is a series over `step`. The panels are the
//! training and validation loss (and `train_loss`, instruct's and dpo's evaluation on
//! training data), the learning rate and the gradient norm, then whatever a
//! task adds: accuracy (`*_accuracy`, classify), reward margin and reward accuracy
//! (`*_reward_margin`, `*_reward_accuracy`, dpo). A panel no run has data for is left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, VizError};
use crate::font;
use crate::output::{render_png, write};

/// One run's metrics: series name → `(step, value)` points in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMetrics {
    /// The run directory's name: the legend's label.
    pub name: String,
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

/// The file a run directory's metrics are in.
pub const METRICS_FILE: &str = "metrics.jsonl";

impl RunMetrics {
    /// Reads `dir/metrics.jsonl`. A last line without its newline (a run writing it right
    /// now) is skipped; any other line that is not a metrics object is an error naming it.
    pub fn read(dir: &Path) -> Result<Self> {
        let bad = |message: String| VizError::Metrics {
            path: dir.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(bad("no such run directory".into()));
        }
        let path = dir.join(METRICS_FILE);
        if !path.is_file() {
            return Err(bad(format!(
                "no {METRICS_FILE}: not a training run directory (`cargo xtask pretrain` and `finetune` write one)"
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| VizError::io(&path, e))?;
        let series = parse_metrics(&text).map_err(|message| VizError::Metrics {
            path: path.clone(),
            message,
        })?;
        let name = dir.file_name().unwrap_or(dir.as_os_str());
        Ok(RunMetrics {
            name: name.to_string_lossy().into_owned(),
            series,
        })
    }

    fn points(&self, key: &str) -> Option<&[(f64, f64)]> {
        self.series
            .get(key)
            .map(Vec::as_slice)
            .filter(|p| !p.is_empty())
    }
}

type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn parse_metrics(text: &str) -> std::result::Result<Series, String> {
    let mut series = Series::new();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let in_progress = !complete && i + 1 == lines.len();
        match parse_line(line) {
            Ok(Some((step, values))) => {
                for (key, v) in values {
                    series.entry(key).or_default().push((step, v));
                }
            }
            Ok(None) => {}
            Err(_) if in_progress => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    if series.is_empty() {
        return Err("holds no metrics yet".into());
    }
    Ok(series)
}

/// A metrics line: its step and its numeric fields.
type Line = (f64, Vec<(String, f64)>);

/// A line's step and numeric fields; `None` for a blank line.
fn parse_line(line: &str) -> std::result::Result<Option<Line>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let step = (object.get("step").and_then(|s| s.as_f64())).ok_or("no numeric \"step\"")?;
    let values = (object.iter())
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64().filter(|v| v.is_finite())?)))
        .collect();
    Ok(Some((step, values)))
}

/// One panel of the figure: a title and the series it draws.
struct Panel {
    title: &'static str,
    /// Series names in the panel, chosen from the runs' keys.
    keys: fn(&str) -> bool,
}

const PANELS: [Panel; 6] = [
    Panel {
        title: "loss",
        // `train_loss` is an evaluation on training data (instruct, dpo).
        keys: |k| matches!(k, "loss" | "val_loss" | "train_loss"),
    },
    Panel {
        title: "learning rate",
        keys: |k| k == "lr",
    },
    Panel {
        title: "gradient norm (before clipping)",
        keys: |k| k == "grad_norm",
    },
    Panel {
        title: "accuracy",
        keys: |k| k.ends_with("_accuracy") && !k.ends_with("reward_accuracy"),
    },
    Panel {
        title: "reward margin (chosen − rejected)",
        keys: |k| k.ends_with("reward_margin"),
    },
    Panel {
        title: "reward accuracy",
        keys: |k| k.ends_with("reward_accuracy"),
    },
];

/// Run colours, one per run: Tableau 10, then ten darker ones, so that a sweep of up to 20
/// runs has no two alike.
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 100, 0),
    RGBColor(75, 0, 130),
    RGBColor(0, 128, 128),
    RGBColor(128, 128, 0),
    RGBColor(255, 0, 255),
    RGBColor(184, 134, 11),
    RGBColor(70, 70, 70),
];

/// The panels some run has data for, each with its series names.
fn panels_of(runs: &[RunMetrics]) -> Vec<(&'static str, Vec<String>)> {
    (PANELS.iter())
        .filter_map(|panel| {
            let mut keys: Vec<String> = (runs.iter())
                .flat_map(|r| r.series.keys())
                .filter(|k| (panel.keys)(k))
                .cloned()
                .collect();
            keys.sort_by_key(|k| (k != "loss", k.clone()));
            keys.dedup();
            (!keys.is_empty()).then_some((panel.title, keys))
        })
        .collect()
}

const PANEL_W: u32 = 640;
const PANEL_H: u32 = 360;

/// Panels a row: two, or one for a single panel.
fn columns(panels: usize) -> usize {
    panels.clamp(1, 2)
}

/// The figure's size for `panels` panels.
fn figure_size(panels: usize) -> (u32, u32) {
    let cols = columns(panels);
    let rows = panels.div_ceil(cols).max(1);
    (cols as u32 * PANEL_W, rows as u32 * PANEL_H)
}

/// Draws every panel of `runs` into `root`.
fn draw_runs<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunMetrics]) -> Result<()> {
    font::register();
    let fail = |e| VizError::draw("the run plot", e);
    root.fill(&WHITE).map_err(fail)?;
    let panels = panels_of(runs);
    let cols = columns(panels.len());
    let areas = root.split_evenly((panels.len().div_ceil(cols).max(1), cols));
    for ((title, keys), area) in panels.iter().zip(&areas) {
        draw_panel(area, title, keys, runs).map_err(fail)?;
    }
    root.present().map_err(fail)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    keys: &[String],
    runs: &[RunMetrics],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = || (runs.iter()).flat_map(|r| keys.iter().filter_map(|k| r.points(k)).flatten());
    let (x, y) = (span(points().map(|p| p.0)), span(points().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (font::FAMILY, 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    let y_format = y_formatter(y);
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| y_format(*v))
        .label_style((font::FAMILY, 12))
        .axis_desc_style((font::FAMILY, 13))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (r, run) in runs.iter().enumerate() {
        let colour = PALETTE[r % PALETTE.len()];
        for (i, key) in keys.iter().enumerate() {
            let Some(points) = run.points(key) else {
                continue;
            };
            // Series with a point every step (the training loss, the learning rate) are
            // thin, the training loss paler; evaluations (a few points) are thick, with
            // markers.
            let sparse = points.len() <= 50;
            let style = match (i, sparse) {
                (0, _) if keys.len() > 1 => colour.mix(0.55).stroke_width(1),
                (_, false) => colour.stroke_width(1),
                (_, true) => colour.stroke_width(2),
            };
            let label = match runs.len() {
                1 => key.clone(),
                _ => format!("{}: {key}", run.name),
            };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
            if sparse && (i > 0 || keys.len() == 1) {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .label_font((font::FAMILY, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
}

/// Tick labels for an axis spanning `(low, high)`: scientific for small magnitudes (a
/// learning rate), else as few decimals as the span needs.
fn y_formatter((low, high): (f64, f64)) -> impl Fn(f64) -> String {
    let magnitude = low.abs().max(high.abs());
    let decimals = match high - low {
        d if d >= 10.0 => 0,
        d if d >= 1.0 => 1,
        d if d >= 0.1 => 2,
        _ => 3,
    };
    move |v| match magnitude {
        m if m > 0.0 && m < 0.01 => format!("{v:.1e}"),
        _ => format!("{v:.decimals$}"),
    }
}

/// `(low, high)` of `values`, padded by 5%, never empty.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = match hi - lo {
        d if d > 0.0 => d * 0.05,
        _ => lo.abs().max(1.0) * 0.05,
    };
    (lo - pad, hi + pad)
}

/// The figure for `runs` as `(png, svg)`.
pub fn plot_runs(runs: &[RunMetrics]) -> Result<(Vec<u8>, String)> {
    let (w, h) = figure_size(panels_of(runs).len());
    let (png, ()) = render_png(w, h, "the run plot", |root| draw_runs(root, runs))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw_runs(&root, runs)?;
    }
    Ok((png, svg))
}

/// Reads the runs in `dirs` and writes their plot as `out` (`.png`) and the same name with
/// `.svg`, atomically. Returns both paths.
pub fn write_run_plot(dirs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    write_run_plot_of(dirs, |_| true, out)
}

/// As [`write_run_plot`], drawing only the series `keep` accepts (`|k| k == "val_loss"`:
/// one panel of every run's validation loss).
pub fn write_run_plot_of(
    dirs: &[PathBuf],
    keep: impl Fn(&str) -> bool,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    if dirs.is_empty() {
        return Err(VizError::Input("no run directory given".into()));
    }
    let mut runs = dirs
        .iter()
        .map(|d| RunMetrics::read(d))
        .collect::<Result<Vec<_>>>()?;
    for run in &mut runs {
        run.series.retain(|k, _| keep(k));
    }
    let (png, svg) = plot_runs(&runs)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| VizError::io(&dir, e))?;
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    Ok(vec![
        write(&dir, &format!("{stem}.png"), &png)?,
        write(&dir, &format!("{stem}.svg"), svg.as_bytes())?,
    ])
}

/// The plot a training run keeps of itself: `RUN_DIR/metrics.png` and `metrics.svg`.
pub fn plot_run_dir(run_dir: &Path) -> Result<Vec<PathBuf>> {
    write_run_plot(&[run_dir.to_path_buf()], &run_dir.join("metrics.png"))
}
