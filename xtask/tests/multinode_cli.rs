//! `cargo xtask pretrain --nodes 2` on one machine: two processes on loopback, joined by
//! Burn's global collective, train as one process with two devices and as one device with
//! the same global batch; they stop and resume together; a node that dies stops the other
//! with an error within the timeout.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A port `p` such that `p`, `p + 1` and `p + 2` (the coordinator, node 0, node 1) are free.
fn free_ports() -> u16 {
    for _ in 0..100 {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 65000 && (1..=2).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no three free ports in a row");
}

/// Two micro-batches of 2×32 tokens per step, so that two devices (or nodes) take one each.
fn recipe(dir: &Path, max_steps: usize) -> String {
    tiny_recipe(
        dir,
        max_steps,
        serde_json::json!({"run": {"tokens_per_step": 128}}),
    )
    .display()
    .to_string()
}

/// `pretrain` as node `rank` of two, with `args` after the cluster flags.
fn node(rank: usize, port: u16, args: &[&str], env: &[(&str, &str)]) -> Child {
    let coordinator = format!("127.0.0.1:{port}");
    let mut c = xtask();
    c.args(["pretrain", "--nodes", "2", "--node-rank", &rank.to_string()])
        .args(["--coordinator", &coordinator])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Both nodes with the same `args`; both must succeed.
fn two_nodes(args: &[&str]) {
    let port = free_ports();
    let nodes = [node(0, port, args, &[]), node(1, port, args, &[])];
    for (rank, child) in nodes.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "node {rank}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

fn assert_same_losses(what: &str, a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(
        a.iter().map(|l| l.0).collect::<Vec<_>>(),
        b.iter().map(|l| l.0).collect::<Vec<_>>(),
        "{what}: steps"
    );
    for ((step, x), (_, y)) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{what}, step {step}: {x} vs {y}"
        );
    }
}

#[test]
fn two_nodes_train_as_two_devices_and_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), 4);
    let dir = |name: &str| tmp.path().join(name).display().to_string();
    let (one, two, nodes) = (dir("one"), dir("two"), dir("nodes"));
    ok(&["pretrain", "--config", &recipe, "--out", &one]);
    ok(&[
        "pretrain",
        "--config",
        &recipe,
        "--out",
        &two,
        "--set",
        "run.devices=2",
    ]);
    // The two nodes stop after step 2 and resume from node 0's checkpoint.
    two_nodes(&["--config", &recipe, "--out", &nodes, "--stop-at-step", "2"]);
    assert_eq!(steps(Path::new(&nodes)), [1, 2]);
    two_nodes(&["--resume", &nodes]);

    let reference = losses(Path::new(&one));
    assert_eq!(reference.len(), 4, "{reference:?}");
    assert_same_losses("two devices", &reference, &losses(Path::new(&two)));
    assert_same_losses("node 0", &reference, &losses(Path::new(&nodes)));
    let follower = Path::new(&nodes).join("node-1");
    assert_same_losses("node 1", &reference, &losses(&follower));
    // Node 0 alone writes checkpoints, into the run directory.
    assert_eq!(newest_checkpoint(Path::new(&nodes)).unwrap().0, 4);
    assert!(file_names(&follower.join("checkpoints")).is_empty());
}

/// Waits for `what` on a child's stderr, which is piped into a file.
fn wait_for_text(child: &mut Child, log: &Path, what: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(child.try_wait().unwrap().is_none(), "the node ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no {what:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits at most `limit` for a child, killing it after that.
fn output_within(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    let _ = child.kill();
    (child.wait_with_output().unwrap(), took)
}

#[test]
fn a_dead_node_stops_the_other_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), 50);
    let out = tmp.path().join("run").display().to_string();
    let args = [
        "--config",
        &recipe,
        "--out",
        &out,
        "--collective-timeout",
        "5",
    ];
    let port = free_ports();
    let lead = node(0, port, &args, &[]);
    // Node 1 pauses after step 2, as if hung, and is then killed.
    let log = tmp.path().join("node-1.log");
    let mut follower = xtask();
    follower
        .args(["pretrain", "--nodes", "2", "--node-rank", "1"])
        .args(["--coordinator", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("LLM_E2E_FAILPOINT", "after-step:2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut follower = follower.spawn().unwrap();
    wait_for_text(&mut follower, &log, "paused");
    follower.kill().unwrap();
    follower.wait().unwrap();

    let (lead, took) = output_within(lead, Duration::from_secs(60));
    let err = stderr(&lead);
    assert!(!lead.status.success(), "node 0 went on alone: {err}");
    assert!(
        took < Duration::from_secs(30),
        "node 0 took {took:?} to stop"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("a node may have stopped or died"), "{err}");
    // Its checkpoint of step 2 is intact: the run resumes from it.
    assert_eq!(newest_checkpoint(Path::new(&out)).unwrap().0, 2);
}

#[test]
fn a_lone_node_gives_up_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), 2);
    let out = tmp.path().join("run").display().to_string();
    let port = free_ports();
    let lead = node(
        0,
        port,
        &[
            "--config",
            &recipe,
            "--out",
            &out,
            "--collective-timeout",
            "2",
        ],
        &[],
    );
    let (lead, took) = output_within(lead, Duration::from_secs(60));
    let err = stderr(&lead);
    assert!(!lead.status.success(), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("within 2 s"), "{err}");
}

#[test]
fn bad_cluster_flags_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), 1);
    let out = tmp.path().join("run").display().to_string();
    let base = ["pretrain", "--config", &recipe, "--out", &out];
    for (flags, named) in [
        (vec!["--nodes", "2"], "--coordinator"),
        (
            vec![
                "--nodes",
                "2",
                "--node-rank",
                "2",
                "--coordinator",
                "127.0.0.1:29500",
            ],
            "--node-rank",
        ),
        (
            vec!["--nodes", "2", "--coordinator", "somewhere"],
            "--coordinator",
        ),
        (
            vec![
                "--nodes",
                "2",
                "--node-rank",
                "1",
                "--coordinator",
                "10.1.2.3:29500",
            ],
            "--node-address",
        ),
        (vec!["--nodes", "0"], "--nodes"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(flags).collect();
        let err = fails(&args);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
