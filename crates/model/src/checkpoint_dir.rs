//! A directory of training checkpoints: `step_00000200.ckpt`, … and `best.ckpt`.
//!
//! The training crate writes one per run (`runs/<name>/checkpoints/`); `--resume` and
//! `generate --model RUN_DIR` read it. This is the one place that knows the file names.

use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointInfo};
use crate::error::{ModelError, Result};

/// The checkpoints of a run.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
}

/// A damaged checkpoint that was passed over, and where it was moved.
#[derive(Debug)]
pub struct SetAside {
    pub path: PathBuf,
    pub error: ModelError,
    pub moved_to: PathBuf,
}

const BEST: &str = "best.ckpt";
/// The suffix of a damaged checkpoint that was moved aside.
const SET_ASIDE: &str = "corrupt";

fn step_of_name(name: &str) -> Option<usize> {
    name.strip_prefix("step_")?
        .strip_suffix(".ckpt")?
        .parse()
        .ok()
}

impl CheckpointDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointDir { dir: dir.into() }
    }

    /// The checkpoints of the run in `run_dir` (`run_dir/checkpoints`).
    pub fn of_run(run_dir: &Path) -> Self {
        Self::new(run_dir.join("checkpoints"))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn step_path(&self, step: usize) -> PathBuf {
        self.dir.join(format!("step_{step:08}.ckpt"))
    }

    pub fn best_path(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// The step checkpoints present, oldest first. Temporary files of an interrupted write
    /// and damaged files set aside are not checkpoints. A missing directory holds none.
    pub fn steps(&self) -> Result<Vec<(usize, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModelError::io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| ModelError::io(&self.dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(step) = step_of_name(name) {
                out.push((step, path));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every checkpoint file, newest first: the step files by step, and `best.ckpt` by the
    /// step its header records (after a step file of the same step). A `best.ckpt` whose
    /// header cannot be read comes last.
    pub fn newest_first(&self) -> Result<Vec<PathBuf>> {
        // (step, is a step file, path); `None` (an unreadable best.ckpt) sorts last.
        let mut all: Vec<(Option<usize>, bool, PathBuf)> = self
            .steps()?
            .into_iter()
            .map(|(step, path)| (Some(step), true, path))
            .collect();
        let best = self.best_path();
        if best.is_file() {
            let step = Checkpoint::inspect(&best).ok().and_then(|i| i.step());
            all.push((step, false, best));
        }
        all.sort_by_key(|&(step, is_step_file, _)| std::cmp::Reverse((step, is_step_file)));
        Ok(all.into_iter().map(|(_, _, p)| p).collect())
    }

    /// The newest checkpoint that loads and verifies, with its path. Damaged files
    /// ([`ModelError::Corrupt`]) are moved aside as `<name>.corrupt` (never deleted) and
    /// reported to `on_damaged`; any other error stops the search.
    pub fn newest_valid(
        &self,
        mut on_damaged: impl FnMut(SetAside),
    ) -> Result<Option<(PathBuf, Checkpoint)>> {
        for path in self.newest_first()? {
            match Checkpoint::load(&path) {
                Ok(ckpt) => return Ok(Some((path, ckpt))),
                Err(error @ ModelError::Corrupt { .. }) => {
                    let moved_to = Self::set_aside(&path)?;
                    on_damaged(SetAside {
                        path,
                        error,
                        moved_to,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(None)
    }

    /// The newest complete checkpoint (its header reads and its sections fill the file), by
    /// the order of [`Self::newest_first`]. Quick: the sections are not verified.
    pub fn newest_complete(&self) -> Result<Option<(PathBuf, CheckpointInfo)>> {
        Ok(self
            .newest_first()?
            .into_iter()
            .find_map(|p| Checkpoint::inspect(&p).ok().map(|i| (p, i))))
    }

    /// The checkpoint to use a trained run for: `best.ckpt` (lowest validation loss) when
    /// it is complete, else the newest complete step checkpoint.
    pub fn preferred(&self) -> Result<Option<(PathBuf, CheckpointInfo)>> {
        let best = self.best_path();
        if let Ok(info) = Checkpoint::inspect(&best) {
            return Ok(Some((best, info)));
        }
        self.newest_complete()
    }

    /// Moves a damaged checkpoint out of the way of new ones (to `<name>.corrupt`, or
    /// `<name>.corrupt.N` if that exists) and returns its new path.
    pub fn set_aside(path: &Path) -> Result<PathBuf> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut target = path.with_file_name(format!("{name}.{SET_ASIDE}"));
        let mut n = 1;
        while target.exists() {
            target = path.with_file_name(format!("{name}.{SET_ASIDE}.{n}"));
            n += 1;
        }
        std::fs::rename(path, &target).map_err(|e| ModelError::io(path, e))?;
        Ok(target)
    }

    /// Deletes all but the newest `keep` step checkpoints (`best.ckpt` is separate).
    pub fn prune(&self, keep: usize) -> Result<()> {
        let all = self.steps()?;
        for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_file(path).map_err(|e| ModelError::io(path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gpt2Config;
    use burn::backend::Flex;

    fn save(path: &Path, step: usize) {
        let config = Gpt2Config::tiny();
        let model = config.init::<Flex>(&Default::default()).unwrap();
        let mut ckpt = Checkpoint::from_model(&model).unwrap();
        ckpt.metadata = serde_json::json!({ "step": step });
        ckpt.save(path).unwrap();
    }

    #[test]
    fn best_is_ordered_by_its_step_and_damaged_files_are_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path());
        save(&dir.step_path(2), 2);
        save(&dir.step_path(4), 4);
        save(&dir.best_path(), 6);
        std::fs::write(tmp.path().join(".step_00000008.ckpt.tmp-9"), b"half").unwrap();
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(dir.newest_first().unwrap()),
            ["best.ckpt", "step_00000004.ckpt", "step_00000002.ckpt"]
        );
        save(&dir.best_path(), 4);
        assert_eq!(
            names(dir.newest_first().unwrap()),
            ["step_00000004.ckpt", "best.ckpt", "step_00000002.ckpt"]
        );
        // Truncate the newest: the search moves it aside and takes the next.
        let newest = dir.step_path(4);
        let len = std::fs::metadata(&newest).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap();
        f.set_len(len / 2).unwrap();
        let mut damaged = Vec::new();
        let (path, ckpt) = dir.newest_valid(|s| damaged.push(s)).unwrap().unwrap();
        assert_eq!((path, ckpt.step()), (dir.best_path(), Some(4)));
        assert_eq!(damaged.len(), 1);
        assert_eq!(
            damaged[0].moved_to,
            tmp.path().join("step_00000004.ckpt.corrupt")
        );
        assert!(damaged[0].moved_to.is_file() && !newest.exists());
        assert_eq!(dir.steps().unwrap().len(), 1);
        assert_eq!(dir.preferred().unwrap().unwrap().0, dir.best_path());
        dir.prune(0).unwrap();
        assert!(dir.steps().unwrap().is_empty());
    }
}
