//! The Hugging Face hub: resolving a model id to files in the local hub cache, and
//! downloading them (with `hf-hub`) when the network allows.
//!
//! The cache is the standard one shared with Python's `huggingface_hub` (see
//! [`llm_common::hf`]); `HF_ENDPOINT` names a mirror. With `HF_HUB_OFFLINE=1` nothing is
//! downloaded and a miss is an error that says what to do.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::{ModelError, Result};

/// Files that make a usable GPT-2 model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Weight files, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
/// Files fetched if the repo has them: the generation config and the tokenizer.
pub const OPTIONAL_FILES: [&str; 4] = [
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
];

/// Access to the hub cache, and to the hub unless offline.
#[derive(Clone, Debug)]
pub struct Hub {
    cache_dir: PathBuf,
    offline: bool,
}

pub use llm_common::hf::{cache_dir_from_env as default_cache_dir, offline_from_env};

impl Hub {
    /// The cache and offline setting from the environment.
    pub fn from_env() -> Result<Self> {
        let cache_dir = default_cache_dir().ok_or_else(|| {
            ModelError::Hub(
                "cannot find the Hugging Face cache: set HF_HOME or HF_HUB_CACHE".into(),
            )
        })?;
        Ok(Hub {
            cache_dir,
            offline: offline_from_env(),
        })
    }

    /// A hub with an explicit cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>, offline: bool) -> Self {
        Hub {
            cache_dir: cache_dir.into(),
            offline,
        }
    }

    /// The cache directory (`…/huggingface/hub`).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Whether downloads are disabled.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// A file of a model repo, if it is in the cache.
    pub fn cached(&self, repo_id: &str, filename: &str) -> Option<PathBuf> {
        Cache::new(self.cache_dir.clone())
            .repo(Repo::model(repo_id.to_string()))
            .get(filename)
    }

    /// The snapshot directory of a model in the cache, if its config and weights are there.
    pub fn cached_model_dir(&self, repo_id: &str) -> Option<PathBuf> {
        let config = self.cached(repo_id, CONFIG_FILE)?;
        WEIGHT_FILES
            .iter()
            .any(|w| self.cached(repo_id, w).is_some())
            .then(|| config.parent().map(Path::to_path_buf))
            .flatten()
    }

    fn miss(&self, repo_id: &str, why: &str) -> ModelError {
        ModelError::Hub(format!(
            "model {repo_id:?} is not in the Hugging Face cache at {} ({why}). \
             Run `cargo xtask download --model {repo_id}` on a machine with network access, \
             then copy the cache here or point HF_HOME / HF_HUB_CACHE at it",
            self.cache_dir.display()
        ))
    }

    /// A local directory with the model's `config.json` and weights: from the cache if it is
    /// there, else downloaded (unless offline).
    pub fn model_dir(&self, repo_id: &str) -> Result<PathBuf> {
        if let Some(dir) = self.cached_model_dir(repo_id) {
            return Ok(dir);
        }
        if self.offline {
            return Err(self.miss(repo_id, "HF_HUB_OFFLINE is set, so nothing is downloaded"));
        }
        self.download(repo_id, false)?;
        self.cached_model_dir(repo_id)
            .ok_or_else(|| self.miss(repo_id, "the download did not complete"))
    }

    /// Downloads a model's config, weights and tokenizer files into the cache (files already
    /// cached are not fetched again). Returns the local paths.
    pub fn download(&self, repo_id: &str, progress: bool) -> Result<Vec<PathBuf>> {
        if self.offline {
            return Err(self.miss(repo_id, "HF_HUB_OFFLINE is set, so nothing is downloaded"));
        }
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()));
        if let Some(token) = llm_common::hf::token_from_env() {
            builder = builder.with_token(Some(token));
        }
        let api = builder
            .with_endpoint(llm_common::hf::endpoint_from_env())
            .with_progress(progress)
            .build()
            .map_err(|e| ModelError::Hub(format!("cannot start the hub client: {e}")))?;
        let repo = api.model(repo_id.to_string());
        let network = |file: &str, e: hf_hub::api::sync::ApiError| {
            self.miss(repo_id, &format!("downloading {file} failed: {e}"))
        };
        let mut paths = vec![repo.get(CONFIG_FILE).map_err(|e| network(CONFIG_FILE, e))?];
        let mut weights_error = None;
        for file in WEIGHT_FILES {
            match repo.get(file) {
                Ok(p) => {
                    paths.push(p);
                    weights_error = None;
                    break;
                }
                Err(e) => {
                    weights_error.get_or_insert(network(file, e));
                }
            }
        }
        if let Some(e) = weights_error {
            return Err(e);
        }
        for file in OPTIONAL_FILES {
            if let Ok(p) = repo.get(file) {
                paths.push(p);
            }
        }
        Ok(paths)
    }
}

/// Whether a `--model` value names a hub repo (`gpt2`, `openai-community/gpt2`) rather than
/// a path.
pub fn looks_like_repo_id(spec: &str) -> bool {
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match spec.split_once('/') {
        None => valid(spec),
        Some((org, name)) => valid(org) && valid(name),
    }
}
