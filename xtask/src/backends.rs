//! `backends`: which Burn backends this binary has, and a quick matmul on each to show they
//! work and how fast they are here.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{backend::Backend, Distribution, ElementConversion, Tensor};
use clap::Args;
use llm_model::backend::{run_on, BackendKind, BackendTask};

#[derive(Args)]
pub struct BackendsArgs {
    /// Matrix size for the check.
    #[arg(long, default_value_t = 768)]
    size: usize,
}

/// Multiplies two random matrices, checks one entry against a dot product on the host, and
/// returns (GFLOP/s, max error).
struct MatmulCheck {
    n: usize,
}

impl BackendTask for MatmulCheck {
    type Output = (f64, f64);

    fn run<B: Backend>(self, device: B::Device) -> (f64, f64) {
        let n = self.n;
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let _ = a.clone().matmul(b.clone()); // warm-up (kernel compilation on GPUs)
        B::sync(&device).ok();
        let runs = 5;
        let start = Instant::now();
        let mut c = a.clone().matmul(b.clone());
        for _ in 1..runs {
            c = a.clone().matmul(b.clone());
        }
        B::sync(&device).ok();
        let secs = start.elapsed().as_secs_f64() / runs as f64;
        let row: Vec<f32> = a.slice([0..1, 0..n]).into_data().iter::<f32>().collect();
        let col: Vec<f32> = b
            .slice([0..n, n - 1..n])
            .into_data()
            .iter::<f32>()
            .collect();
        let want: f64 = row
            .iter()
            .zip(&col)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum();
        let got: f32 = c.slice([0..1, n - 1..n]).into_scalar().elem();
        (
            2.0 * (n as f64).powi(3) / secs / 1e9,
            (got as f64 - want).abs(),
        )
    }
}

pub fn backends(args: BackendsArgs) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    println!(
        "CPU: avx2={} fma={} avx512f={} ({} threads)",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let default = BackendKind::default_compiled();
    for kind in BackendKind::ALL {
        if !kind.is_compiled() {
            println!("{kind:<8} not compiled in (--features {kind})");
            continue;
        }
        let (gflops, err) = run_on(kind, MatmulCheck { n: args.size })?;
        let mark = if Some(kind) == default {
            " (default)"
        } else {
            ""
        };
        println!(
            "{kind:<8} {gflops:>7.1} GFLOP/s on a {n}³ f32 matmul, error {err:.1e}{mark}",
            n = args.size
        );
        anyhow::ensure!(err < 1e-2, "{kind}: matmul result is wrong (error {err})");
    }
    Ok(())
}
