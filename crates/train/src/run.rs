//! The run directory: `runs/<name>/` with the resolved config, metrics, TensorBoard events,
//! samples, prepared data and checkpoints.
//!
//! ```text
//! runs/<name>/
//!   config.json                  the resolved recipe (and the model config it gives)
//!   metrics.jsonl                one line per logged step
//!   events.out.tfevents.*        TensorBoard scalars (`tensorboard --logdir runs/`)
//!   samples.txt                  text generated during training
//!   data/                        shards prepared from `data.inputs`
//!   checkpoints/step_00000200.ckpt, …, best.ckpt   (llm_model::CheckpointDir)
//!   .lock                        held while a process trains here
//!   node-1/, …                   the other nodes' own logs and data (multi-node runs)
//! ```

use std::path::{Path, PathBuf};

use llm_common::fs::{remove_stale_temps, DirLock};
use llm_model::CheckpointDir;

use crate::error::{Result, TrainError};

fn data_dir(root: &Path) -> PathBuf {
    root.join("data")
}

/// A run directory that exists, is writable, and is this process's alone.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    checkpoints: CheckpointDir,
    /// Whether this process created the directory (so it may remove it if setting up fails).
    created: bool,
    _lock: DirLock,
}

impl RunDir {
    /// Opens (creating it if needed) and locks a run directory, proves it writable by
    /// writing and removing a file (so a bad path fails at start-up, not at the first
    /// checkpoint), and removes the temporary files that writes interrupted by a crash or
    /// `kill -9` left behind (each one is logged).
    pub fn open(root: &Path) -> Result<Self> {
        let fail = |source| TrainError::RunDir {
            path: root.into(),
            source,
        };
        let created = !root.exists();
        let checkpoints = CheckpointDir::of_run(root);
        std::fs::create_dir_all(checkpoints.path()).map_err(fail)?;
        let lock = DirLock::acquire(root).map_err(fail)?;
        let probe = root.join(".write-test");
        llm_common::fs::atomic_write(&probe, b"ok").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        let data = data_dir(root);
        for dir in [root, checkpoints.path(), &data] {
            if !dir.is_dir() {
                continue;
            }
            for (path, bytes) in remove_stale_temps(dir).map_err(fail)? {
                tracing::warn!(
                    "removed {} ({:.1} MB), left by an interrupted write",
                    path.display(),
                    bytes as f64 / 1e6
                );
            }
        }
        Ok(RunDir {
            root: root.into(),
            checkpoints,
            created,
            _lock: lock,
        })
    }

    /// The directory of node `rank` (> 0) of a multi-node run whose node 0 trains in
    /// `lead`: `lead/node-RANK/`, its own and locked, for its logs and prepared data. Its
    /// checkpoints are the run's, in `lead/checkpoints/` (node 0 writes them; on several
    /// machines the directory is shared or copied).
    pub fn follower(lead: &Path, rank: usize) -> Result<Self> {
        let mut run = Self::open(&lead.join(format!("node-{rank}")))?;
        run.checkpoints = CheckpointDir::of_run(lead);
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether [`Self::open`] created the directory.
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn checkpoints(&self) -> &CheckpointDir {
        &self.checkpoints
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn samples_path(&self) -> PathBuf {
        self.root.join("samples.txt")
    }

    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.root)
    }
}
