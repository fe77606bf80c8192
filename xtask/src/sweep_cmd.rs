//! `sweep`: a base recipe and a list (or grid) of overrides; each point is an ordinary
//! `pretrain` run directory, run one after another in a child process (so each has its own
//! peak RSS), resumable. Writes `sweep.md`, `sweep.csv` and `val_loss.png`/`.svg`.
//!
//! ```json
//! {"base": "../shakespeare-small.json",          // relative to this file
//!  "set": {"schedule.max_steps": 150},           // every point
//!  "points": [{"name": "gpt2"}, {"name": "rope", "set": {"model.position": "rope"}}],
//!  "grid": {"model.n_kv_head": [1, 2, 4]}}       // or a grid: every combination
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_common::bench::{median, rss_mib_of, Rss};
use llm_model::Gpt2Config;
use serde_json::{json, Map, Value};

#[derive(Args)]
pub struct SweepArgs {
    /// The sweep: `{"base": recipe, "set": {...}, "points": [{"name", "set"}] | "grid": {...}}`.
    #[arg(long)]
    config: PathBuf,
    /// Where the points' run directories and the results go (default `runs/sweeps/<file
    /// stem>`). Running again continues: finished points are kept, an interrupted one resumes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these points (comma-separated names); the results cover every finished one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The Burn backend the points train on.
    #[arg(long, default_value_t = crate::model_cmd::default_backend())]
    backend: String,
}

/// One point: a name and its overrides (`key → JSON value`), on top of the sweep's.
#[derive(Clone, Debug)]
struct Point {
    name: String,
    set: Map<String, Value>,
}

/// The sweep file, read.
struct Sweep {
    base: PathBuf,
    set: Map<String, Value>,
    points: Vec<Point>,
}

/// What a finished point measured (`RUN_DIR/sweep-point.json`).
#[derive(Clone, Debug)]
struct Outcome {
    point: Point,
    params: usize,
    tokens_per_s: f64,
    peak_rss_mib: f64,
    val_loss: Option<f64>,
    wall_s: f64,
}

const POINT_FILE: &str = "sweep-point.json";

fn object(v: &Value, what: &str) -> Result<Map<String, Value>> {
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(o) => Ok(o.clone()),
        other => bail!("{what} must be an object of \"key\": value, got {other}"),
    }
}

fn read_sweep(path: &Path) -> Result<Sweep> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let at = |m: String| anyhow::anyhow!("{}: {m}", path.display());
    for key in v
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if !["base", "set", "points", "grid", "description"].contains(&key.as_str()) {
            return Err(at(format!(
                "unknown key {key:?} (known: base, set, points, grid, description)"
            )));
        }
    }
    let base = v["base"]
        .as_str()
        .ok_or_else(|| at("\"base\" (the recipe, relative to this file) is missing".into()))?;
    let base = path.parent().unwrap_or(Path::new(".")).join(base);
    let set = object(&v["set"], "\"set\"").map_err(|e| at(e.to_string()))?;
    let mut points = Vec::new();
    for (i, p) in v["points"].as_array().into_iter().flatten().enumerate() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| at(format!("points[{i}] has no \"name\"")))?;
        let set = object(&p["set"], &format!("points[{i}].set")).map_err(|e| at(e.to_string()))?;
        points.push(Point {
            name: name.to_string(),
            set,
        });
    }
    points.extend(grid_points(
        &object(&v["grid"], "\"grid\"").map_err(|e| at(e.to_string()))?,
    )?);
    if points.is_empty() {
        return Err(at("no points: give \"points\" or \"grid\"".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(p) = points.iter().find(|p| !seen.insert(p.name.clone())) {
        return Err(at(format!("two points are named {:?}", p.name)));
    }
    Ok(Sweep { base, set, points })
}

/// Every combination of a grid's values, named `key=value,key=value`.
fn grid_points(grid: &Map<String, Value>) -> Result<Vec<Point>> {
    let mut points = vec![Point {
        name: String::new(),
        set: Map::new(),
    }];
    if grid.is_empty() {
        return Ok(Vec::new());
    }
    for (key, values) in grid {
        let values = values
            .as_array()
            .with_context(|| format!("grid.{key} must be a list of values"))?;
        let short = key.rsplit('.').next().unwrap_or(key);
        points = (points.iter())
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    let sep = if q.name.is_empty() { "" } else { "," };
                    q.name = format!("{}{sep}{short}={}", q.name, plain(v));
                    q.set.insert(key.clone(), v.clone());
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

/// A JSON value as a `--set` value and a label: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one point (or resumes it) in a child `pretrain`; returns its wall time and peak RSS.
fn run_point(sweep: &Sweep, point: &Point, dir: &Path, backend: &str) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("pretrain").arg("--backend").arg(backend);
    if dir.join("config.json").is_file() {
        cmd.arg("--resume").arg(dir);
    } else {
        cmd.arg("--config").arg(&sweep.base).arg("--out").arg(dir);
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        cmd.arg("--set")
            .arg(format!("run.name={}", Value::String(name)));
        for (k, v) in sweep.set.iter().chain(&point.set) {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting point {:?}", point.name))?;
    let pid = child.id().to_string();
    let mut peak = 0f64;
    let status = loop {
        // VmHWM is the child's own high-water mark: the last reading before it exits.
        let now = rss_mib_of(&pid, Rss::Peak);
        if now.is_finite() {
            peak = peak.max(now);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!(
            "point {:?} failed ({status}); its run directory is {} (running the sweep again resumes it)",
            point.name,
            dir.display()
        );
    }
    Ok((start.elapsed().as_secs_f64(), peak))
}

/// The run's numbers: parameters (from its config), median tokens/s and last val loss
/// (from its metrics).
fn measure(point: &Point, dir: &Path, wall_s: f64, peak_rss_mib: f64) -> Result<Outcome> {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)
        .with_context(|| format!("{}/config.json", dir.display()))?;
    let model: Gpt2Config = serde_json::from_value(config["model"].clone())
        .with_context(|| format!("{}/config.json: the model section", dir.display()))?;
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
    let lines: Vec<Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let speeds: Vec<f64> = lines
        .iter()
        .filter_map(|l| l["tokens_per_s"].as_f64())
        .collect();
    let val_loss = lines.iter().rev().find_map(|l| l["val_loss"].as_f64());
    Ok(Outcome {
        point: point.clone(),
        params: model.num_params(),
        tokens_per_s: if speeds.is_empty() {
            f64::NAN
        } else {
            median(speeds)
        },
        peak_rss_mib,
        val_loss,
        wall_s,
    })
}

fn save_outcome(dir: &Path, o: &Outcome) -> Result<()> {
    let v = json!({
        "name": o.point.name, "set": o.point.set, "params": o.params,
        "tokens_per_s": o.tokens_per_s, "peak_rss_mib": o.peak_rss_mib,
        "val_loss": o.val_loss, "wall_s": o.wall_s,
    });
    llm_common::fs::atomic_write(
        &dir.join(POINT_FILE),
        serde_json::to_string_pretty(&v)?.as_bytes(),
    )
    .with_context(|| format!("writing {}", dir.join(POINT_FILE).display()))
}

fn load_outcome(dir: &Path, point: &Point) -> Option<Outcome> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(POINT_FILE)).ok()?).ok()?;
    Some(Outcome {
        point: point.clone(),
        params: v["params"].as_u64()? as usize,
        tokens_per_s: v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mib: v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        val_loss: v["val_loss"].as_f64(),
        wall_s: v["wall_s"].as_f64().unwrap_or(f64::NAN),
    })
}

fn overrides(p: &Point) -> String {
    let s: Vec<String> = p
        .set
        .iter()
        .map(|(k, v)| format!("{k}={}", plain(v)))
        .collect();
    if s.is_empty() {
        "(base)".into()
    } else {
        s.join(" ")
    }
}

fn write_tables(out: &Path, outcomes: &[Outcome]) -> Result<()> {
    let mut csv = String::from("name,overrides,params,tokens_per_s,peak_rss_mib,val_loss,wall_s\n");
    let mut md = String::from(
        "| point | overrides | params | tokens/s | peak RSS (MiB) | final val loss | wall (s) |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let val = o.val_loss.map_or(String::new(), |v| format!("{v:.4}"));
        csv.push_str(&format!(
            "{},\"{}\",{},{:.0},{:.0},{val},{:.0}\n",
            o.point.name,
            overrides(&o.point).replace('"', "\"\""),
            o.params,
            o.tokens_per_s,
            o.peak_rss_mib,
            o.wall_s
        ));
        md.push_str(&format!(
            "| {} | `{}` | {:.2} M | {:.0} | {:.0} | {} | {:.0} |\n",
            o.point.name,
            overrides(&o.point),
            o.params as f64 / 1e6,
            o.tokens_per_s,
            o.peak_rss_mib,
            if val.is_empty() { "-".into() } else { val },
            o.wall_s
        ));
    }
    for (name, text) in [("sweep.csv", csv), ("sweep.md", md)] {
        llm_common::fs::atomic_write(&out.join(name), text.as_bytes())
            .with_context(|| format!("writing {}", out.join(name).display()))?;
    }
    Ok(())
}

pub fn sweep(args: SweepArgs) -> Result<()> {
    let sweep = read_sweep(&args.config)?;
    let stem = args
        .config
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/sweeps").join(&stem));
    if let Some(bad) = args
        .only
        .iter()
        .find(|n| !sweep.points.iter().any(|p| &&p.name == n))
    {
        bail!("--only {bad:?}: the sweep has no such point");
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    for (i, point) in sweep.points.iter().enumerate() {
        let dir = out.join(&point.name);
        if let Some(done) = load_outcome(&dir, point) {
            outcomes.insert(i, done);
            continue;
        }
        if !args.only.is_empty() && !args.only.contains(&point.name) {
            continue;
        }
        eprintln!(
            "== sweep point {}/{}: {}: {}",
            i + 1,
            sweep.points.len(),
            point.name,
            overrides(point)
        );
        let (wall, peak) = run_point(&sweep, point, &dir, &args.backend)?;
        let outcome = measure(point, &dir, wall, peak)?;
        save_outcome(&dir, &outcome)?;
        outcomes.insert(i, outcome);
    }
    let outcomes: Vec<Outcome> = outcomes.into_values().collect();
    write_tables(&out, &outcomes)?;
    let dirs: Vec<PathBuf> = outcomes.iter().map(|o| out.join(&o.point.name)).collect();
    llm_viz::runs::write_run_plot_of(&dirs, |k| k == "val_loss", &out.join("val_loss.png"))?;
    println!(
        "{} of {} points done: {}",
        outcomes.len(),
        sweep.points.len(),
        out.join("sweep.md").display()
    );
    print!("{}", std::fs::read_to_string(out.join("sweep.md"))?);
    Ok(())
}
