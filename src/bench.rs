//! `bench train`: training throughput of each model at batch 32 and 256 on this machine,
//! next to this machine's own large-matmul FLOP rate measured in the same process.

use std::fmt::Write as _;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::{Shape, Split};
use crate::models::adam::{Adam, AdamConfig};
use crate::models::{self, Architecture};
use crate::train::batch_tensor;

/// The notebook's models by name: `simple`, `conv`.
pub fn notebook_model(name: &str) -> Option<&'static str> {
    NOTEBOOK.iter().map(|(n, _)| *n).find(|n| *n == name)
}

type Builder = fn() -> Architecture;

const NOTEBOOK: [(&str, Builder); 2] = [("simple", Architecture::notebook_simple), ("conv", Architecture::notebook_conv)];

/// Multiply-accumulates of one forward pass for one MNIST image through a notebook model.
pub fn forward_macs(model: &str) -> u64 {
    match model {
        "simple" => Architecture::notebook_simple()
            .parameters(Shape::MNIST)
            .iter()
            .filter(|p| p.shape.len() == 2)
            .map(|p| (p.shape[0] * p.shape[1]) as u64)
            .sum(),
        _ => {
            let conv1 = 28 * 28 * 8 * 9;
            let conv2 = 14 * 14 * 4 * 8 * 9;
            let linear = 196 * 64 + 64 * 10 + 10 * 64 + 64 * 196;
            let deconv1 = 7 * 7 * 4 * 8 * 9;
            let deconv2 = 14 * 14 * 8 * 9;
            conv1 + conv2 + linear + deconv1 + deconv2
        }
    }
}

/// FLOPs of one training step per image: forward + backward (about twice the forward).
pub fn train_flops_per_image(model: &str) -> f64 {
    3.0 * 2.0 * forward_macs(model) as f64
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub model: String,
    /// `cpu-trainer` (src/models/cpu.rs) or `autograd` (candle's, as on other devices).
    pub path: &'static str,
    pub batch_size: usize,
    pub steps: usize,
    pub ms_per_step: f64,
    pub samples_per_s: f64,
    /// Model FLOP/s as a fraction of the machine's matmul FLOP/s.
    pub fraction_of_matmul_peak: f64,
    /// Projected time of one 60,000-image epoch.
    pub epoch_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub threads: usize,
    pub matmul_gflops: f64,
    pub results: Vec<TrainBench>,
}

/// GFLOP/s of a 1024x1024 f32 matmul on `device` (best of several).
pub fn matmul_gflops(device: &Device) -> anyhow::Result<f64> {
    let n = 1024;
    let a = Tensor::ones((n, n), candle_core::DType::F32, device)?;
    let b = Tensor::ones((n, n), candle_core::DType::F32, device)?;
    a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

/// Trains each model for `steps` steps at each batch size on synthetic images.
/// On the CPU the steps go through the CPU trainer, as training does, unless `autograd`.
pub fn train(steps: usize, device: &Device, only: Option<&str>, batches: &[usize], autograd: bool) -> anyhow::Result<BenchReport> {
    let peak = matmul_gflops(device)?;
    let mut rng = crate::rng::Rng::new(0);
    let n = 256 * 4;
    let data = Split {
        shape: Shape::MNIST,
        images: (0..n * Shape::MNIST.pixels()).map(|_| if rng.next_f32() < 0.8 { 0 } else { (rng.next_u64() % 256) as u8 }).collect(),
        labels: vec![0; n],
    };
    let mut results = Vec::new();
    // As training does (src/train.rs): without it, Adam's moments decay into subnormals after
    // a thousand steps or so and x86 arithmetic on them is many times slower.
    let _ftz = crate::train::FlushDenormals::on();
    for (name, arch) in NOTEBOOK.into_iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
        for &batch_size in batches {
            let (varmap, model) = models::initialise(&arch(), Shape::MNIST, 0, device)?;
            let cfg = AdamConfig::new(1e-3, 0.0);
            let mut trainer =
                if device.is_cpu() && !autograd { crate::models::cpu::Trainer::new(&arch(), Shape::MNIST, &varmap, cfg)? } else { None };
            let path = if trainer.is_some() { "cpu-trainer" } else { "autograd" };
            let mut opt = if trainer.is_none() { Some(Adam::new(varmap.all_vars(), cfg)?) } else { None };
            let mut run = |count: usize| -> anyhow::Result<f64> {
                let t = Instant::now();
                for step in 0..count {
                    let start = (step * batch_size) % n;
                    let indices: Vec<usize> = (start..start + batch_size).map(|i| i % n).collect();
                    if let Some(trainer) = trainer.as_mut() {
                        trainer.step(&data, &indices);
                        continue;
                    }
                    let x = batch_tensor(&data, indices, device)?;
                    let loss = crate::models::dense::mse(&model.forward(&x)?, &x)?;
                    opt.as_mut().expect("the autograd path has its optimiser").step(&loss.backward()?)?;
                    loss.to_scalar::<f32>()?;
                }
                Ok(t.elapsed().as_secs_f64())
            };
            run(5)?; // warm-up
            let secs = run(steps)?;
            let samples_per_s = (steps * batch_size) as f64 / secs;
            results.push(TrainBench {
                model: name.to_owned(),
                path,
                batch_size,
                steps,
                ms_per_step: secs * 1e3 / steps as f64,
                samples_per_s,
                fraction_of_matmul_peak: samples_per_s * train_flops_per_image(name) / (peak * 1e9),
                epoch_s: 60000.0 / samples_per_s,
            });
        }
    }
    Ok(BenchReport { device: models::device::name(device), threads: candle_core::utils::get_num_threads(), matmul_gflops: peak, results })
}

impl BenchReport {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "device {}, {} threads, matmul 1024^3: {:.1} GFLOP/s", self.device, self.threads, self.matmul_gflops);
        let _ = writeln!(
            s,
            "{:<7} {:<12} {:>5} {:>6} {:>9} {:>10} {:>9} {:>8}",
            "model", "path", "batch", "steps", "ms/step", "samples/s", "epoch s", "of peak"
        );
        for r in &self.results {
            let _ = writeln!(
                s,
                "{:<7} {:<12} {:>5} {:>6} {:>9.3} {:>10.0} {:>9.2} {:>7.1}%",
                r.model,
                r.path,
                r.batch_size,
                r.steps,
                r.ms_per_step,
                r.samples_per_s,
                r.epoch_s,
                100.0 * r.fraction_of_matmul_peak
            );
        }
        s
    }
}
