//! Atomic writes, leftover temporary files and directory locks.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::failpoint;

/// Marks a temporary file of [`atomic_write`]: `.<name>.tmp-<pid>`.
const TEMP_MARK: &str = ".tmp-";

/// The temporary file [`atomic_write`] uses for `path` in this process.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    Ok(parent(path).join(format!(
        ".{}{TEMP_MARK}{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes a file atomically: a temporary file in the same directory, flushed to disk,
/// renamed over `path`, then the directory flushed so the rename itself is durable. A crash
/// leaves either the old file or the new one (plus, at worst, a temporary file that
/// [`remove_stale_temps`] clears), never half of `path`.
pub fn atomic_write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    atomic_write_with(path, |f| {
        if failpoint::is_armed() {
            f.write_all(&contents[..contents.len() / 2])?;
            f.sync_all()?;
            failpoint::check(|| format!("mid-write:{name}"));
            f.write_all(&contents[contents.len() / 2..])
        } else {
            f.write_all(contents)
        }
    })?;
    failpoint::check(|| format!("after-rename:{name}"));
    Ok(())
}

/// [`atomic_write`] for contents written as they are made (too large to hold in memory):
/// `write` fills the temporary file, which is then flushed and renamed over `path`. If
/// `write` fails, the temporary file is removed and `path` is untouched.
pub fn atomic_write_with<T>(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let value = write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Best effort: not every platform can open a directory to sync it.
        if let Ok(dir) = File::open(parent(path)) {
            let _ = dir.sync_all();
        }
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether a file name is one of [`atomic_write`]'s temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(TEMP_MARK)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes the temporary files that interrupted [`atomic_write`]s left in `dir` (not in
/// its subdirectories) and returns each one with its size. Call it only while no other
/// process writes into `dir` (hold a [`DirLock`]).
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !is_temp_name(&name.to_string_lossy()) || !entry.file_type()?.is_file() {
            continue;
        }
        let size = entry.metadata()?.len();
        std::fs::remove_file(entry.path())?;
        removed.push((entry.path(), size));
    }
    removed.sort();
    Ok(removed)
}

/// An exclusive lock on a directory, held until dropped: `<dir>/.lock`, locked with the
/// operating system's advisory file lock, so it is released even if the process is killed.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails at once if another process holds it (the error says which
    /// process, when it can).
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{who} is using this directory (it holds {})",
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(atomic_write(&dir.path().join("no/such/dir/x"), b"x").is_err());
    }

    #[test]
    fn a_streamed_write_that_fails_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.parquet");
        std::fs::write(&path, b"old").unwrap();
        let err = atomic_write_with(&path, |f| {
            f.write_all(b"half of the new")?;
            Err::<(), _>(io::Error::other("the writer failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the writer failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        let n = atomic_write_with(&path, |f| f.write_all(b"new").map(|_| 3)).unwrap();
        assert_eq!((n, std::fs::read(&path).unwrap()), (3, b"new".to_vec()));
    }

    #[test]
    fn stale_temporaries_are_recognised_and_removed() {
        assert!(is_temp_name(".best.ckpt.tmp-1234"));
        assert!(!is_temp_name("best.ckpt.tmp-1234"));
        assert!(!is_temp_name(".best.ckpt.tmp-"));
        assert!(!is_temp_name(".best.ckpt.tmp-12a"));
        assert!(!is_temp_name("step_00000001.ckpt"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".step_00000002.ckpt.tmp-77"), b"half").unwrap();
        std::fs::write(dir.path().join("step_00000001.ckpt"), b"whole").unwrap();
        let removed = remove_stale_temps(dir.path()).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].1, 4);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["step_00000001.ckpt"]);
    }

    #[test]
    fn a_directory_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        // Another open file description of the same file conflicts, as another process would.
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("is using this directory"), "{err}");
        drop(lock);
        DirLock::acquire(dir.path()).unwrap();
    }
}
