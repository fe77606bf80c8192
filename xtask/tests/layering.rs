//! The crate layering is law: common → bpe → data → model → train → infer → viz, each depending only
//! on crates before it (normal, dev and build dependencies alike); xtask may use them all.
//! Checked from `cargo metadata`, so a stray dependency fails CI.

use std::collections::HashMap;
use std::process::Command;

const LAYERS: [&str; 7] = [
    "llm-common",
    "llm-bpe",
    "llm-data",
    "llm-model",
    "llm-train",
    "llm-infer",
    "llm-viz",
];

/// Pairs that layering alone would allow but that must not exist: a server build must not
/// compile the trainer, and the visualisations need neither.
const FORBIDDEN: [(&str, &str); 4] = [
    ("llm-infer", "llm-train"),
    ("llm-infer", "llm-data"),
    ("llm-viz", "llm-train"),
    ("llm-viz", "llm-data"),
];

#[test]
fn crates_depend_only_on_lower_layers() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rank: HashMap<&str, usize> = LAYERS.iter().enumerate().map(|(i, n)| (*n, i)).collect();

    let packages = meta["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for layer in LAYERS.iter().chain(&["xtask"]) {
        assert!(names.contains(layer), "workspace member {layer} is missing");
    }

    let mut violations = Vec::new();
    for pkg in packages {
        let name = pkg["name"].as_str().unwrap();
        let Some(&own) = rank.get(name) else { continue };
        for dep in pkg["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if FORBIDDEN.contains(&(name, dep_name)) {
                violations.push(format!("{name} must not depend on {dep_name}"));
            }
            if dep_name == "xtask" {
                violations.push(format!("{name} depends on xtask"));
            }
            // A crate's tests may turn on its own features (llm-model's tests need
            // `ndarray`); that is not a dependency on another layer.
            let own_tests = dep_name == name && dep["kind"].as_str() == Some("dev");
            if let Some(&theirs) = rank.get(dep_name) {
                if theirs >= own && !own_tests {
                    violations.push(format!(
                        "{name} (layer {own}) depends on {dep_name} (layer {theirs}, kind {})",
                        dep["kind"].as_str().unwrap_or("normal")
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}
