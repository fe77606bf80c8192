//! Which SIMD instruction set the kernels run: detected once, at run time, so that one
//! binary runs on every x86-64 CPU (and, through the scalar code, on other architectures).

use std::sync::OnceLock;

/// What this CPU offers the kernels, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// AVX-512 (F, BW, VL) with VNNI's `vpdpbusd`.
    Avx512Vnni,
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    Baseline,
}

impl Level {
    pub(crate) fn has_avx512(self) -> bool {
        matches!(self, Level::Avx512 | Level::Avx512Vnni)
    }
}

pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        if avx512 && is_x86_feature_detected!("avx512vnni") {
            return Level::Avx512Vnni;
        }
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The kernels this CPU runs: `avx512-vnni`, `avx512`, `avx2` or `scalar`.
pub fn kernel_level() -> &'static str {
    match level() {
        Level::Avx512Vnni => "avx512-vnni",
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Baseline => "scalar",
    }
}
