//! Backend selection: the one place where Cargo features become Burn backend types.
//!
//! All tensor code in llm-e2e is generic over `B: Backend` (or [`KernelBackend`], Burn's
//! backend with llm-e2e's own ops, where it needs them). A binary picks the concrete
//! backend at run time from those compiled in, with [`run_on`]:
//!
//! | feature   | type          | device                     | runs on                          |
//! |-----------|---------------|----------------------------|----------------------------------|
//! | `flex`    | [`Flex`]      | `FlexDevice`               | CPU (default): gemm, SIMD, rayon |
//! | `ndarray` | [`NdArray`]   | `NdArrayDevice::Cpu`       | CPU, a second backend for checks |
//! | `wgpu`    | [`Wgpu`]      | `WgpuDevice::DefaultDevice`| Vulkan / Metal / DX12 GPUs       |
//! | `cuda`    | [`Cuda`]      | `CudaDevice::new(0)`       | NVIDIA GPUs                      |
//!
//! Several features may be on at once; [`BackendKind::default_compiled`] then prefers a GPU.

use std::fmt;
use std::str::FromStr;

use burn::backend::Autodiff;

use crate::kernels::{KernelAutodiff, KernelBackend};

#[cfg(feature = "cuda")]
pub use burn::backend::Cuda;
#[cfg(feature = "flex")]
pub use burn::backend::Flex;
#[cfg(feature = "ndarray")]
pub use burn::backend::NdArray;
#[cfg(feature = "wgpu")]
pub use burn::backend::Wgpu;

/// The backend a binary uses when none is named: a GPU if one is compiled in, else Flex.
#[cfg(feature = "cuda")]
pub type DefaultBackend = Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type DefaultBackend = Wgpu;
#[cfg(all(feature = "flex", not(any(feature = "cuda", feature = "wgpu"))))]
pub type DefaultBackend = Flex;
#[cfg(all(
    feature = "ndarray",
    not(any(feature = "cuda", feature = "wgpu", feature = "flex"))
))]
pub type DefaultBackend = NdArray;

/// A Burn backend, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Flex,
    NdArray,
    Wgpu,
    Cuda,
}

/// Failure to pick a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend {0:?}: expected one of flex, ndarray, wgpu, cuda")]
    Unknown(String),
    #[error(
        "backend {kind} is not compiled in (compiled: {}); rebuild with `--features {kind}`",
        BackendKind::compiled().iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    )]
    NotCompiled { kind: BackendKind },
}

impl BackendKind {
    /// Every backend, in order of preference for the default (GPUs first).
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cuda,
        BackendKind::Wgpu,
        BackendKind::Flex,
        BackendKind::NdArray,
    ];

    /// The name used on the command line and as the Cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }

    /// The backend used when none is named (the same as [`DefaultBackend`]).
    pub fn default_compiled() -> Option<BackendKind> {
        Self::ALL.into_iter().find(|k| k.is_compiled())
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

/// Work that is generic over the backend: Rust has no generic closures, so a task is a type.
pub trait BackendTask {
    type Output;
    fn run<B: KernelBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend `kind`, with that backend's default device.
pub fn run_on<T: BackendTask>(kind: BackendKind, task: T) -> Result<T::Output, BackendError> {
    #[allow(unused_variables)]
    let task = task;
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => Ok(task.run::<Flex>(Default::default())),
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => Ok(task.run::<NdArray>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(task.run::<Wgpu>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(task.run::<Cuda>(Default::default())),
        #[allow(unreachable_patterns)]
        kind => Err(BackendError::NotCompiled { kind }),
    }
}

/// Work that needs gradients (training), generic over an autodiff backend.
pub trait AutodiffTask {
    type Output;
    fn run<B: KernelAutodiff>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on `Autodiff<kind>`, with that backend's default device.
pub fn run_autodiff_on<T: AutodiffTask>(
    kind: BackendKind,
    task: T,
) -> Result<T::Output, BackendError> {
    #[allow(unused_variables)]
    let task = task;
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => Ok(task.run::<Autodiff<Flex>>(Default::default())),
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => Ok(task.run::<Autodiff<NdArray>>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(task.run::<Autodiff<Wgpu>>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(task.run::<Autodiff<Cuda>>(Default::default())),
        #[allow(unreachable_patterns)]
        kind => Err(BackendError::NotCompiled { kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>().unwrap(), k);
        }
        assert!("tpu".parse::<BackendKind>().is_err());
    }

    #[test]
    fn flex_is_the_default_cpu_backend() {
        if !cfg!(any(feature = "cuda", feature = "wgpu")) && cfg!(feature = "flex") {
            assert_eq!(BackendKind::default_compiled(), Some(BackendKind::Flex));
        }
    }

    #[test]
    fn missing_backend_is_a_clear_error() {
        struct Name;
        impl BackendTask for Name {
            type Output = String;
            fn run<B: KernelBackend>(self, device: B::Device) -> String {
                B::name(&device)
            }
        }
        for kind in BackendKind::ALL {
            match run_on(kind, Name) {
                Ok(name) => assert!(kind.is_compiled(), "{kind} ran as {name}"),
                Err(e) => {
                    assert!(!kind.is_compiled());
                    assert!(e.to_string().contains(&format!("--features {kind}")), "{e}");
                }
            }
        }
    }
}
