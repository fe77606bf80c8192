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
//!   checkpoints/step_00000200.ckpt, …, best.ckpt
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// A run directory that exists and is writable.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates the directory (and `checkpoints/`) and proves it writable by writing and
    /// removing a file, so a bad path fails at start-up, not at the first checkpoint.
    pub fn create(root: &Path) -> Result<Self> {
        let fail = |source| TrainError::RunDir {
            path: root.into(),
            source,
        };
        std::fs::create_dir_all(root.join("checkpoints")).map_err(fail)?;
        let probe = root.join(".write-test");
        llm_bpe::fs::atomic_write(&probe, b"ok").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(RunDir { root: root.into() })
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        self.root.join("data")
    }

    pub fn checkpoint_path(&self, step: usize) -> PathBuf {
        self.root
            .join("checkpoints")
            .join(format!("step_{step:08}.ckpt"))
    }

    pub fn best_path(&self) -> PathBuf {
        self.root.join("checkpoints").join("best.ckpt")
    }

    /// The step checkpoints present, oldest first. Temporary files of an interrupted write
    /// are not checkpoints and are ignored.
    pub fn checkpoints(&self) -> Result<Vec<(usize, PathBuf)>> {
        let dir = self.root.join("checkpoints");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))? {
            let path = entry.map_err(|e| TrainError::io(&dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(step) = name
                .strip_prefix("step_")
                .and_then(|s| s.strip_suffix(".ckpt"))
                .and_then(|s| s.parse::<usize>().ok())
            {
                out.push((step, path));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes all but the newest `keep` step checkpoints (`best.ckpt` is separate).
    pub fn prune(&self, keep: usize) -> Result<()> {
        let all = self.checkpoints()?;
        for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_file(path).map_err(|e| TrainError::io(path, e))?;
        }
        Ok(())
    }
}
