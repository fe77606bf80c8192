//! Where the Hugging Face hub cache is, and whether to go online: resolved from the
//! environment exactly as Python's `huggingface_hub` does, so both share one cache.
//!
//! - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
//!   `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
//! - offline: `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`;
//! - endpoint: `HF_ENDPOINT` (a mirror), else `https://huggingface.co`;
//! - token (gated repos): `HF_TOKEN`, else the `token` file `huggingface-cli login` wrote
//!   (`hf-hub` reads that one itself).
//!
//! Inside the cache a repo lives in `models--<org>--<name>` (or `datasets--…`), where
//! `refs/main` names the commit whose files are under `snapshots/<commit>/`.

use std::path::{Path, PathBuf};

/// The hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The hub cache directory, from the environment.
pub fn cache_dir_from_env() -> Option<PathBuf> {
    env_path("HF_HUB_CACHE")
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| env_path("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env_path("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| env_path("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only operation.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The hub's address: `HF_ENDPOINT` without a trailing `/`, else [`DEFAULT_ENDPOINT`].
pub fn endpoint_from_env() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .map(|e| e.trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

/// `HF_TOKEN`, if set and not empty.
pub fn token_from_env() -> Option<String> {
    std::env::var("HF_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The kinds of hub repo, as their cache folders are prefixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// `models--org--name` or `datasets--org--name`: a repo's folder in the cache.
pub fn repo_folder(kind: RepoKind, repo_id: &str) -> String {
    let prefix = match kind {
        RepoKind::Model => "models",
        RepoKind::Dataset => "datasets",
    };
    format!("{prefix}--{}", repo_id.replace('/', "--"))
}

/// The cached snapshot of a repo's `main`, if `refs/main` names one that exists.
pub fn cached_snapshot(cache_dir: &Path, kind: RepoKind, repo_id: &str) -> Option<PathBuf> {
    let repo = cache_dir.join(repo_folder(kind, repo_id));
    let commit = std::fs::read_to_string(repo.join("refs/main")).ok()?;
    let snapshot = repo.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_folders_follow_huggingface_hub() {
        assert_eq!(repo_folder(RepoKind::Model, "gpt2"), "models--gpt2");
        assert_eq!(
            repo_folder(RepoKind::Dataset, "HuggingFaceFW/fineweb-edu"),
            "datasets--HuggingFaceFW--fineweb-edu"
        );
    }

    #[test]
    fn a_snapshot_is_found_through_refs_main() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cached_snapshot(dir.path(), RepoKind::Dataset, "a/b"), None);
        let repo = dir.path().join("datasets--a--b");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(cached_snapshot(dir.path(), RepoKind::Dataset, "a/b"), None);
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        assert_eq!(
            cached_snapshot(dir.path(), RepoKind::Dataset, "a/b"),
            Some(repo.join("snapshots/abc123"))
        );
    }
}
