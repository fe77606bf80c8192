//! Datasets from the hub, offline: `download --dataset` through the real `hf-hub` client
//! against a loopback stand-in for the hub (`common::fake_hub`), resuming a cut-off file and
//! checking sizes; then `prepare --input hf://datasets/…` from the cache with HF_HUB_OFFLINE.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::fake_hub::{etag, FakeHub, HubFile};
use common::*;

const REPO: &str = "fixture-org/fineweb-fixture";

fn parquet(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("crates/data/tests/fixtures/parquet").join(name)).unwrap()
}

/// Runs xtask against `hub` and `cache`, never through a proxy (ureq ignores NO_PROXY).
fn hub_run(args: &[&str], cache: &Path, hub: Option<&FakeHub>, offline: bool) -> Output {
    let mut c = xtask();
    c.args(args).env("HF_HUB_CACHE", cache);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    c.env(
        "HF_ENDPOINT",
        hub.map_or("http://127.0.0.1:9", |h| h.url.as_str()),
    );
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    } else {
        c.env_remove("HF_HUB_OFFLINE");
    }
    c.output().unwrap()
}

fn succeeds(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
}

fn fails_cleanly(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "should fail: {}", stdout(out));
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn snapshot(cache: &Path) -> PathBuf {
    cache
        .join("datasets--fixture-org--fineweb-fixture/snapshots")
        .join(common::fake_hub::COMMIT)
}

#[test]
fn a_dataset_downloads_resumes_and_prepares_offline() {
    let files = vec![
        HubFile::new(
            "sample/10BT/000_00000.parquet",
            parquet("sample-snappy.parquet"),
        ),
        HubFile::new(
            "sample/10BT/001_00000.parquet",
            parquet("sample-zstd.parquet"),
        ),
        HubFile::new(
            "data/CC-MAIN-2024-10/000_00000.parquet",
            parquet("sample-gzip.parquet"),
        ),
    ];
    let first = files[0].bytes.clone();
    let hub = FakeHub::start(REPO, files);
    let cache = tempfile::tempdir().unwrap();

    // An earlier download of the first file was cut off after 10,000 bytes.
    let blobs = cache
        .path()
        .join("datasets--fixture-org--fineweb-fixture/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{}.part", etag(0))), &first[..10_000]).unwrap();

    let dl = ["download", "--dataset", REPO, "--name", "sample/10BT"];
    let out = succeeds(&hub_run(
        &[&dl[..], &["--max-files", "1"]].concat(),
        cache.path(),
        Some(&hub),
        false,
    ));
    assert!(out.contains("1 Parquet file(s)"), "{out}");
    assert!(hub
        .ranges("sample/10BT/000_00000.parquet")
        .contains(&"bytes=10000-".to_string()));
    let snap = snapshot(cache.path());
    assert_eq!(
        std::fs::read(snap.join("sample/10BT/000_00000.parquet")).unwrap(),
        first
    );
    assert!(
        !snap.join("sample/10BT/001_00000.parquet").exists(),
        "--max-files 1"
    );

    // All of the folder: the cached file is not fetched again; the other folder is left.
    let reads_before = hub.ranges("sample/10BT/000_00000.parquet").len();
    let out = succeeds(&hub_run(&dl, cache.path(), Some(&hub), false));
    assert!(out.contains("2 Parquet file(s)"), "{out}");
    assert_eq!(
        hub.ranges("sample/10BT/000_00000.parquet").len(),
        reads_before
    );
    assert!(snap.join("sample/10BT/001_00000.parquet").is_file());
    assert!(!snap.join("data").exists());

    // Offline, hf:// resolves to the cached folder.
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    let input = format!("hf://datasets/{REPO}/sample/10BT");
    let prep = [
        "prepare",
        "--input",
        &input,
        "--out",
        shards.to_str().unwrap(),
        "--shard-tokens",
        "5000",
    ];
    let out = succeeds(&hub_run(&prep, cache.path(), None, true));
    assert!(out.contains("252 documents"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shards.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["inputs"][0][0], "000_00000.parquet");
    assert_eq!(manifest["inputs"][1][0], "001_00000.parquet");

    // A recipe may name the dataset as its input: the run prepares it from the cache.
    let recipe = tiny_recipe(
        dir.path(),
        1,
        serde_json::json!({"data": {"inputs": [input]}}),
    );
    let run_dir = dir.path().join("run");
    let pretrain = [
        "pretrain",
        "--config",
        recipe.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ];
    succeeds(&hub_run(&pretrain, cache.path(), None, true));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("data/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["documents"], 252);

    // Offline, `download` answers from the cache without asking the hub, and a missing
    // dataset says how to get it.
    let asked = hub.requests();
    let out = succeeds(&hub_run(&dl, cache.path(), Some(&hub), true));
    assert!(out.contains("2 Parquet file(s)"), "{out}");
    assert_eq!(hub.requests(), asked, "offline, the hub is not asked");
    let other = ["download", "--dataset", REPO, "--name", "sample/100BT"];
    let err = fails_cleanly(&hub_run(&other, cache.path(), Some(&hub), true));
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(err.contains("--name sample/100BT"), "{err}");
    let missing = format!("hf://datasets/{REPO}/sample/100BT");
    let prep = [
        "prepare",
        "--input",
        &missing,
        "--out",
        shards.to_str().unwrap(),
    ];
    let err = fails_cleanly(&hub_run(&prep, cache.path(), None, true));
    assert!(
        err.contains(&format!(
            "cargo xtask download --dataset {REPO} --name sample/100BT"
        )),
        "{err}"
    );

    // A folder the dataset does not have lists those it has.
    let err = fails_cleanly(&hub_run(
        &["download", "--dataset", REPO, "--name", "sample/100BT"],
        cache.path(),
        Some(&hub),
        false,
    ));
    assert!(err.contains("data/CC-MAIN-2024-10, sample/10BT"), "{err}");
}

#[test]
fn a_file_of_the_wrong_size_is_refused_and_deleted() {
    let bytes = parquet("sample-snappy.parquet");
    let mut file = HubFile::new("sample/000.parquet", bytes.clone());
    file.listed_size += 1000; // the listing and the file disagree (it changed on the hub)
    let hub = FakeHub::start(REPO, vec![file]);
    let cache = tempfile::tempdir().unwrap();
    let dl = ["download", "--dataset", REPO];
    let err = fails_cleanly(&hub_run(&dl, cache.path(), Some(&hub), false));
    let expected = format!(
        "holds {} bytes but the hub lists {}: deleted; run the download again",
        bytes.len(),
        bytes.len() + 1000
    );
    assert!(err.contains(&expected), "{err}");
    // Neither the snapshot's link nor the blob is left, nor a partial download (hf-hub's
    // empty `.lock` file stays, as it always does).
    assert!(!snapshot(cache.path()).join("sample/000.parquet").exists());
    let blobs = cache
        .path()
        .join("datasets--fixture-org--fineweb-fixture/blobs");
    let left: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The next run downloads it afresh (and fails the same way, the listing being wrong).
    let reads = hub.ranges("sample/000.parquet").len();
    fails_cleanly(&hub_run(&dl, cache.path(), Some(&hub), false));
    assert!(hub.ranges("sample/000.parquet").len() > reads);
}

#[test]
fn a_new_commit_on_the_hub_gets_a_whole_snapshot() {
    let bytes = parquet("sample-lz4.parquet");
    let hub = FakeHub::start(
        REPO,
        vec![HubFile::new("sample/000.parquet", bytes.clone())],
    );
    let cache = tempfile::tempdir().unwrap();
    // The cache holds the file under an older commit of the dataset.
    let repo_dir = cache.path().join("datasets--fixture-org--fineweb-fixture");
    let old = repo_dir.join("snapshots/0ld0ld/sample");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("000.parquet"), &bytes).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "0ld0ld").unwrap();

    succeeds(&hub_run(
        &["download", "--dataset", REPO],
        cache.path(),
        Some(&hub),
        false,
    ));
    assert!(
        !hub.ranges("sample/000.parquet").is_empty(),
        "fetched for the new commit"
    );
    let new = snapshot(cache.path()).join("sample/000.parquet");
    assert_eq!(std::fs::read(new).unwrap(), bytes);
    let dir = tempfile::tempdir().unwrap();
    let input = format!("hf://datasets/{REPO}/sample");
    let out = dir.path().join("shards");
    let prep = ["prepare", "--input", &input, "--out", out.to_str().unwrap()];
    assert!(succeeds(&hub_run(&prep, cache.path(), None, true)).contains("126 documents"));
}
