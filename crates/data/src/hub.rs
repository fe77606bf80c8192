//! Datasets from the Hugging Face hub: a dataset's Parquet files downloaded into the standard
//! hub cache (shared with Python's `huggingface_hub`, see [`llm_common::hf`]), and
//! `hf://datasets/ORG/NAME[/SUBDIR]` resolved to the cached files.
//!
//! Downloads go through `hf-hub`: a file cut off midway stays as `blobs/<etag>.part` and the
//! next run resumes it with a range request; every file's size is checked against the hub's
//! listing, and one of another size is deleted. With `HF_HUB_OFFLINE=1` nothing is fetched, and a dataset missing from the cache
//! is an error that says how to download it.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;
use llm_common::hf::{self, RepoKind};
use serde::Deserialize;

use crate::error::{DataError, Result};

/// The scheme of dataset inputs: `hf://datasets/ORG/NAME[/SUBDIR]`.
pub const HF_DATASETS: &str = "hf://datasets/";

/// A dataset, or a folder of one, on the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetPath {
    /// `ORG/NAME`.
    pub repo: String,
    /// A folder inside it (`sample/10BT`), if any.
    pub subdir: Option<String>,
}

impl DatasetPath {
    /// Parses `hf://datasets/ORG/NAME[/SUBDIR]`; `None` if `uri` does not start with the scheme.
    pub fn parse(uri: &str) -> Option<Result<Self>> {
        let rest = uri.strip_prefix(HF_DATASETS)?;
        let (repo, subdir) = match rest.match_indices('/').nth(1) {
            Some((at, _)) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest.trim_end_matches('/'), None),
        };
        Some(Self::new(repo, subdir).map_err(|_| {
            DataError::Invalid(format!(
                "{uri:?} is not a dataset path: expected {HF_DATASETS}ORG/NAME[/SUBDIR]"
            ))
        }))
    }

    /// The repo (`ORG/NAME`) and folder, as given to `download --dataset REPO --name DIR`.
    /// Neither may hold an empty, `.` or `..` part, so that no path leaves the cache.
    pub fn new(repo: &str, subdir: Option<&str>) -> Result<Self> {
        let subdir = subdir
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty());
        if repo.split('/').count() != 2 || !is_relative_path(repo) {
            return Err(DataError::Invalid(format!(
                "{repo:?} is not a dataset id: expected ORG/NAME"
            )));
        }
        if let Some(dir) = subdir.filter(|d| !is_relative_path(d)) {
            return Err(DataError::Invalid(format!(
                "{dir:?} is not a folder of a dataset: expected a/b/c, without . or .."
            )));
        }
        Ok(DatasetPath {
            repo: repo.to_string(),
            subdir: subdir.map(str::to_string),
        })
    }

    fn download_hint(&self) -> String {
        let name = match &self.subdir {
            Some(s) => format!(" --name {s}"),
            None => String::new(),
        };
        format!("cargo xtask download --dataset {}{name}", self.repo)
    }

    /// Whether a file of the repo (`sample/10BT/000_00000.parquet`) lies under the subdir.
    fn contains(&self, file: &str) -> bool {
        match &self.subdir {
            None => true,
            Some(dir) => file
                .strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

impl std::fmt::Display for DatasetPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{HF_DATASETS}{}", self.repo)?;
        match &self.subdir {
            Some(s) => write!(f, "/{s}"),
            None => Ok(()),
        }
    }
}

/// Whether `path` is `a/b/c`: relative, with no empty, `.` or `..` part (nor a backslash).
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'))
}

/// A file in the hub's listing of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RemoteFile {
    /// The path inside the repo.
    #[serde(rename = "rfilename")]
    pub path: String,
    /// Bytes (listed when asked with `blobs=true`).
    #[serde(default)]
    pub size: Option<u64>,
}

/// The hub's listing of a dataset at its current commit.
#[derive(Clone, Debug, Deserialize)]
pub struct Listing {
    /// The commit of `main` the files belong to.
    #[serde(rename = "sha")]
    pub commit: String,
    #[serde(rename = "siblings")]
    pub files: Vec<RemoteFile>,
}

/// The hub cache, and the hub itself unless offline.
#[derive(Clone, Debug)]
pub struct DatasetHub {
    cache_dir: PathBuf,
    offline: bool,
    endpoint: String,
}

impl DatasetHub {
    /// Cache, offline mode and endpoint from the environment (`HF_HOME`, `HF_HUB_OFFLINE`,
    /// `HF_ENDPOINT`, …).
    pub fn from_env() -> Result<Self> {
        let cache_dir = hf::cache_dir_from_env().ok_or_else(|| {
            DataError::Invalid(
                "cannot find the Hugging Face cache: set HF_HOME or HF_HUB_CACHE".into(),
            )
        })?;
        Ok(Self::new(
            cache_dir,
            hf::offline_from_env(),
            hf::endpoint_from_env(),
        ))
    }

    pub fn new(cache_dir: impl Into<PathBuf>, offline: bool, endpoint: impl Into<String>) -> Self {
        DatasetHub {
            cache_dir: cache_dir.into(),
            offline,
            endpoint: endpoint.into(),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn miss(&self, dataset: &DatasetPath, why: &str) -> DataError {
        DataError::Invalid(format!(
            "{dataset} is not in the Hugging Face cache at {} ({why}). Run `{}` on a machine \
             with network access, then copy the cache here or point HF_HOME / HF_HUB_CACHE at it",
            self.cache_dir.display(),
            dataset.download_hint()
        ))
    }

    /// The cached folder (or file) a dataset path names, for `prepare --input hf://…`.
    /// Never downloads.
    pub fn resolve(&self, dataset: &DatasetPath) -> Result<PathBuf> {
        let snapshot = hf::cached_snapshot(&self.cache_dir, RepoKind::Dataset, &dataset.repo)
            .ok_or_else(|| self.miss(dataset, "no snapshot of it"))?;
        let path = match &dataset.subdir {
            Some(s) => snapshot.join(s),
            None => snapshot,
        };
        if !path.exists() {
            return Err(self.miss(dataset, "the snapshot has no such folder"));
        }
        Ok(path)
    }

    fn api(&self, progress: bool) -> Result<hf_hub::api::sync::Api> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()));
        if let Some(token) = llm_common::hf::token_from_env() {
            builder = builder.with_token(Some(token));
        }
        builder
            .with_endpoint(self.endpoint.clone())
            .with_retries(5)
            .with_progress(progress)
            .build()
            .map_err(|e| DataError::Invalid(format!("cannot start the hub client: {e}")))
    }

    /// The dataset's current commit and its Parquet files under the folder, sorted by path,
    /// with their sizes.
    pub fn remote_parquet_files(&self, dataset: &DatasetPath) -> Result<Listing> {
        if self.offline {
            return Err(self.miss(dataset, "HF_HUB_OFFLINE is set, so the hub is not asked"));
        }
        let repo = self.api(false)?.dataset(dataset.repo.clone());
        let listing: Listing = repo
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| {
                DataError::Invalid(format!("listing {dataset} on {}: {e}", self.endpoint))
            })?
            .into_json()
            .map_err(|e| {
                DataError::Invalid(format!("listing {dataset}: not the hub's answer: {e}"))
            })?;
        if let Some(bad) = listing.files.iter().find(|f| !is_relative_path(&f.path)) {
            return Err(DataError::Invalid(format!(
                "listing {dataset}: the hub at {} lists a file {:?} outside the repo",
                self.endpoint, bad.path
            )));
        }
        let mut files: Vec<RemoteFile> = listing
            .files
            .iter()
            .filter(|f| f.path.ends_with(".parquet") && dataset.contains(&f.path))
            .cloned()
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            return Err(DataError::Invalid(format!(
                "{dataset} has no .parquet files; its folders with some are: {}",
                parquet_folders(&listing.files).join(", ")
            )));
        }
        Ok(Listing {
            commit: listing.commit,
            files,
        })
    }

    /// Downloads the first `max_files` Parquet files of a dataset (all without a limit) into
    /// the cache's snapshot of its current commit. A download cut off midway is resumed
    /// (hf-hub keeps it as `blobs/<etag>.part`); files already in that snapshot with the
    /// listed size are not fetched again. Returns the cached paths. Offline, it returns the
    /// cached files without asking the hub, as `huggingface_hub` does, or says how to get
    /// them.
    pub fn download(
        &self,
        dataset: &DatasetPath,
        max_files: Option<usize>,
        progress: bool,
    ) -> Result<Vec<PathBuf>> {
        if self.offline {
            return self.cached_parquet_files(dataset, max_files);
        }
        let mut listing = self.remote_parquet_files(dataset)?;
        listing.files.truncate(max_files.unwrap_or(usize::MAX));
        let repo = self.api(progress)?.dataset(dataset.repo.clone());
        let snapshot = self
            .cache_dir
            .join(hf::repo_folder(RepoKind::Dataset, &dataset.repo))
            .join("snapshots")
            .join(&listing.commit);
        let mut paths = Vec::with_capacity(listing.files.len());
        for file in &listing.files {
            let cached = snapshot.join(&file.path);
            if cached.is_file() && size_mismatch(&cached, file)?.is_none() {
                paths.push(cached);
                continue;
            }
            let path = repo.download(&file.path).map_err(|e| {
                DataError::Invalid(format!(
                    "downloading {} of {dataset}: {e} (what arrived is kept as a .part file in {} \
                     and the next run resumes it; delete that file to start over)",
                    file.path,
                    snapshot
                        .parent()
                        .and_then(Path::parent)
                        .unwrap_or(&snapshot)
                        .join("blobs")
                        .display()
                ))
            })?;
            if let Some(got) = size_mismatch(&path, file)? {
                return Err(discard(&path, file, got));
            }
            paths.push(path);
        }
        Ok(paths)
    }
}

impl DatasetHub {
    /// The cached Parquet files of a dataset folder, in path order, the first `max_files`.
    fn cached_parquet_files(
        &self,
        dataset: &DatasetPath,
        max_files: Option<usize>,
    ) -> Result<Vec<PathBuf>> {
        let offline = "HF_HUB_OFFLINE is set, so nothing is downloaded";
        let dir = self
            .resolve(dataset)
            .map_err(|_| self.miss(dataset, offline))?;
        let mut files: Vec<PathBuf> = crate::text::collect_inputs(&[dir])?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.truncate(max_files.unwrap_or(usize::MAX));
        if files.is_empty() {
            return Err(self.miss(dataset, &format!("no .parquet files are cached; {offline}")));
        }
        Ok(files)
    }
}

/// The paths with every `hf://datasets/…` replaced by its folder in the hub cache (from the
/// environment); other paths are left as they are. Never downloads.
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut hub = None;
    inputs
        .iter()
        .map(|input| {
            let Some(dataset) = input.to_str().and_then(DatasetPath::parse) else {
                return Ok(input.clone());
            };
            let dataset = dataset?;
            if hub.is_none() {
                hub = Some(DatasetHub::from_env()?);
            }
            hub.as_ref().expect("just set").resolve(&dataset)
        })
        .collect()
}

/// The size of `path` if it is not the listed one (`None` if it is, or none is listed).
fn size_mismatch(path: &Path, file: &RemoteFile) -> Result<Option<u64>> {
    let got = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    Ok(file.size.filter(|&expected| expected != got).map(|_| got))
}

/// Deletes a downloaded file whose size is not the listed one (the file behind the snapshot's
/// link, then the link), and says so: the next run downloads it afresh.
fn discard(path: &Path, file: &RemoteFile, got: u64) -> DataError {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
    DataError::file(
        path,
        format!(
            "{} holds {got} bytes but the hub lists {}: deleted; run the download again \
             (if it happens again, the dataset changed on the hub while it was downloading)",
            file.path,
            file.size.unwrap_or_default()
        ),
    )
}

/// The folders holding Parquet files in a listing, for an error that says what exists.
fn parquet_folders(files: &[RemoteFile]) -> Vec<String> {
    let mut dirs: Vec<String> = files
        .iter()
        .filter(|f| f.path.ends_with(".parquet"))
        .map(|f| match f.path.rsplit_once('/') {
            Some((dir, _)) => dir.to_string(),
            None => "(top level)".into(),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    if dirs.is_empty() {
        dirs.push("none".into());
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_paths_parse() {
        let p = DatasetPath::parse("hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT")
            .unwrap()
            .unwrap();
        assert_eq!(p.repo, "HuggingFaceFW/fineweb-edu");
        assert_eq!(p.subdir.as_deref(), Some("sample/10BT"));
        assert_eq!(
            p.to_string(),
            "hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT"
        );
        assert!(p.contains("sample/10BT/000_00000.parquet"));
        assert!(!p.contains("sample/10BTx/000_00000.parquet"));
        assert!(!p.contains("data/CC-MAIN-2024-10/000_00000.parquet"));
        let whole = DatasetPath::parse("hf://datasets/a/b/").unwrap().unwrap();
        assert_eq!((whole.repo.as_str(), whole.subdir), ("a/b", None));
        assert!(DatasetPath::parse("data/corpus").is_none());
        assert!(DatasetPath::parse("hf://datasets/justone")
            .unwrap()
            .is_err());
        assert!(DatasetPath::parse("hf://datasets/a/b/../c")
            .unwrap()
            .is_err());
    }

    #[test]
    fn a_missing_dataset_says_how_to_download_it() {
        let dir = tempfile::tempdir().unwrap();
        let hub = DatasetHub::new(dir.path(), true, hf::DEFAULT_ENDPOINT);
        let dataset = DatasetPath::new("HuggingFaceFW/fineweb-edu", Some("sample/10BT")).unwrap();
        let err = hub.resolve(&dataset).unwrap_err().to_string();
        assert!(
            err.contains(
                "cargo xtask download --dataset HuggingFaceFW/fineweb-edu --name sample/10BT"
            ),
            "{err}"
        );
        let err = hub
            .download(&dataset, Some(1), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    }

    #[test]
    fn folders_with_parquet_are_listed() {
        let files = [
            "a.parquet",
            "data/x/1.parquet",
            "data/x/2.parquet",
            "README.md",
        ]
        .map(|p| RemoteFile {
            path: p.into(),
            size: None,
        });
        assert_eq!(parquet_folders(&files), ["(top level)", "data/x"]);
    }
}
