//! Which SIMD instruction set the kernels run: detected once, at run time, so that one
//! binary runs on every x86-64 CPU (and, through the scalar code, on other architectures).

use std::sync::OnceLock;

/// What this CPU offers the kernels, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// AVX-512 (F, BW, VL) with VNNI's `vpdpbusd`.
    Avx512Vnni,
    Avx512,
    /// AVX2 with FMA and F16C (every AVX2 CPU has them).
    Avx2,
    Baseline,
}

impl Level {
    pub(crate) fn has_avx512(self) -> bool {
        matches!(self, Level::Avx512 | Level::Avx512Vnni)
    }

    fn name(self) -> &'static str {
        match self {
            Level::Avx512Vnni => "avx512-vnni",
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Baseline => "scalar",
        }
    }
}

/// Environment variable that caps the kernels' instruction set below what the CPU offers:
/// `avx2` runs the AVX2 kernels on an AVX-512 CPU (to measure an AVX2 host's code path),
/// `scalar` the portable ones. Unknown values are ignored.
pub const KERNELS_ENV: &str = "LLM_E2E_KERNELS";

pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var(KERNELS_ENV).ok().and_then(|v| parse(&v));
        let found = detect();
        // `Level` is ordered best first: the cap applies only if it is below the CPU's.
        match cap {
            Some(cap) if cap as u8 > found as u8 => cap,
            _ => found,
        }
    })
}

fn parse(name: &str) -> Option<Level> {
    ALL.into_iter().find(|l| l.name() == name)
}

const ALL: [Level; 4] = [
    Level::Avx512Vnni,
    Level::Avx512,
    Level::Avx2,
    Level::Baseline,
];

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
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

/// The kernels this CPU runs: `avx512-vnni`, `avx512`, `avx2` or `scalar` (the best the
/// CPU has, or lower if [`KERNELS_ENV`] says so).
pub fn kernel_level() -> &'static str {
    level().name()
}

/// The host as benchmarks report it: its SIMD features, the kernels chosen and the
/// threads, e.g. `avx2=true avx512f=true avx512vnni=true, kernels avx512-vnni, 2 threads`.
pub fn host_summary() -> String {
    #[cfg(target_arch = "x86_64")]
    let isa = format!(
        "avx2={} avx512f={} avx512vnni={}",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("avx512f"),
        std::arch::is_x86_feature_detected!("avx512vnni"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let isa = std::env::consts::ARCH.to_string();
    format!(
        "{isa}, kernels {}, {} threads",
        kernel_level(),
        rayon::current_num_threads()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_names_are_the_reported_names() {
        for level in ALL {
            assert_eq!(parse(level.name()), Some(level));
        }
        assert_eq!(parse("avx1024"), None);
    }
}
