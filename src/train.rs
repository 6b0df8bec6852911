//! The training loop (PyTorch semantics: Adam with L2 weight decay, MSE loss, a reshuffle
//! every epoch from the seed, the last partial batch kept), evaluation and encoding.

use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::data::Split;
use crate::models::adam::{Adam, AdamConfig};
use crate::models::{self, Architecture, Autoencoder};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The stage that trains (`train-mnist-conv-s42`), for progress and logs.
    pub label: String,
    #[serde(flatten)]
    pub arch: Architecture,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub mean_loss: f64,
    /// The MSE on the test split after this epoch (as the notebook prints it).
    #[serde(default)]
    pub test_loss: Option<f64>,
}

/// `history.json`: written by training, read by `plot` and the report. It holds no timing
/// (that is in the lock file): an output is the same bytes on every run, machine and executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub settings: TrainSettings,
    pub train_images: usize,
    pub device: String,
    pub epochs: Vec<EpochStats>,
    /// Loss of every optimisation step, in order.
    pub step_loss: Vec<f32>,
}

/// Training produced values that are not finite: the loss, or the parameters themselves (a
/// ReLU network can keep a finite loss while weights are NaN, since ReLU maps NaN to 0 in
/// some kernels). Checked after every epoch, so nothing diverged is ever saved.
#[derive(Debug, thiserror::Error)]
#[error("diverged at epoch {epoch}: {what}")]
pub struct Diverged {
    pub epoch: usize,
    pub what: String,
}

/// Counts the parameter values that are NaN or infinite; names the tensors holding them.
pub fn nonfinite_parameters(varmap: &candle_nn::VarMap) -> anyhow::Result<(usize, usize, Vec<String>)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let (mut bad, mut total, mut tensors) = (0, 0, Vec::new());
    for name in names {
        let values = data[name].as_tensor().flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let n = values.iter().filter(|v| !v.is_finite()).count();
        total += values.len();
        if n > 0 {
            bad += n;
            tensors.push(name.clone());
        }
    }
    Ok((bad, total, tensors))
}

/// Pixels of the given images as f32 in [0, 1] (`uint8 / 255`, as ToTensor does).
pub fn batch_tensor(split: &Split, indices: impl IntoIterator<Item = usize>, device: &Device) -> candle_core::Result<Tensor> {
    let mut buf = Vec::new();
    for i in indices {
        buf.extend(split.image(i).iter().map(|&p| p as f32 / 255.0));
    }
    let p = split.shape.pixels();
    let n = buf.len() / p;
    Tensor::from_vec(buf, (n, p), device)
}

/// Steps between reads of the loss on the autograd path (other devices than the CPU).
const READ_EVERY: usize = 100;

/// Trains a fresh model on `train`; returns its variables, the model and the history.
pub fn fit(
    train: &Split,
    test: Option<&Split>,
    s: &TrainSettings,
    device: &Device,
) -> anyhow::Result<(candle_nn::VarMap, Box<dyn Autoencoder>, History)> {
    fit_with(train, test, s, device, false)
}

/// [`fit`], through candle's autograd even on the CPU when `autograd` (as on other devices).
fn fit_with(
    train: &Split,
    test: Option<&Split>,
    s: &TrainSettings,
    device: &Device,
    autograd: bool,
) -> anyhow::Result<(candle_nn::VarMap, Box<dyn Autoencoder>, History)> {
    anyhow::ensure!(!train.is_empty(), "no training images");
    let (varmap, model) = models::initialise(&s.arch, train.shape, s.seed, device)?;
    let cfg = AdamConfig::new(s.lr, s.weight_decay);
    // On the CPU, the trainer without autograd (src/models/cpu.rs); the weights go back into
    // `varmap` after every epoch, for the checks, the test loss and saving.
    let mut trainer = if device.is_cpu() && !autograd { models::cpu::Trainer::new(&s.arch, train.shape, &varmap, cfg)? } else { None };
    if device.is_cpu() && !autograd && trainer.is_none() {
        tracing::info!("{}: the CPU trainer has no plan for this model; training through candle's autograd", s.label);
    }
    let mut opt = if trainer.is_none() { Some(Adam::new(varmap.all_vars(), cfg)?) } else { None };
    let mut on_device = if trainer.is_none() { Some(DeviceData::new(train, device)?) } else { None };
    let mut shuffle = Rng::derive(s.seed, "shuffle");
    let n = train.len();
    let steps_per_epoch = n.div_ceil(s.batch_size);
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = History {
        settings: s.clone(),
        train_images: n,
        device: models::device::name(device),
        epochs: Vec::new(),
        step_loss: Vec::with_capacity(steps_per_epoch * s.epochs),
    };
    let started = Instant::now();
    let _ftz = FlushDenormals::on();
    for epoch in 1..=s.epochs {
        shuffle.shuffle(&mut order);
        if let Some(d) = on_device.as_mut() {
            d.epoch(&order)?;
        }
        let bar = epoch_bar(&s.label, epoch, s.epochs, steps_per_epoch);
        // Asked once per epoch: it is a terminal query, not something for the step loop.
        let quiet = bar.is_hidden();
        let epoch_start = Instant::now();
        let mut last_log = Instant::now();
        let mut sum = 0f64;
        // Losses of the autograd path not yet read back: reading a device's loss waits for
        // the device, so it happens once per `READ_EVERY` steps and at the end of the epoch.
        let mut pending: Vec<Tensor> = Vec::new();
        for (step, chunk) in order.chunks(s.batch_size).enumerate() {
            let read = match trainer.as_mut() {
                Some(trainer) => vec![trainer.step(train, chunk)],
                None => {
                    let data = on_device.as_ref().expect("the autograd path has its data on the device");
                    let x = data.batch(step * s.batch_size, chunk.len())?;
                    let loss = models::dense::mse(&model.forward(&x)?, &x)?;
                    opt.as_mut().expect("the autograd path has its optimiser").step(&loss.backward()?)?;
                    pending.push(loss.detach());
                    if pending.len() < READ_EVERY && step + 1 < steps_per_epoch {
                        continue;
                    }
                    Tensor::stack(&std::mem::take(&mut pending), 0)?.to_vec1::<f32>()?
                }
            };
            let first = step + 1 - read.len();
            for (i, l) in read.into_iter().enumerate() {
                if !l.is_finite() {
                    return Err(Diverged { epoch, what: format!("the loss is {l} at step {}", first + i + 1) }.into());
                }
                history.step_loss.push(l);
                sum += l as f64;
            }
            let done = ((step + 1) * s.batch_size).min(n);
            let rate = done as f64 / epoch_start.elapsed().as_secs_f64();
            if quiet {
                if last_log.elapsed().as_secs() >= 10 {
                    tracing::info!(
                        "{} epoch {epoch}/{}: step {}/{steps_per_epoch}, loss {:.5}, {rate:.0} samples/s",
                        s.label,
                        s.epochs,
                        step + 1,
                        sum / (step + 1) as f64
                    );
                    last_log = Instant::now();
                }
            } else {
                bar.set_position(step as u64 + 1);
                // The time left for the whole training, not only this epoch.
                let steps_done = (epoch - 1) * steps_per_epoch + step + 1;
                let left = started.elapsed().as_secs_f64() / steps_done as f64 * (s.epochs * steps_per_epoch - steps_done) as f64;
                bar.set_message(format!("loss {:.5}, {} left", sum / (step + 1) as f64, short_duration(left)));
            }
        }
        bar.finish_and_clear();
        if let Some(trainer) = &trainer {
            trainer.write_to(&varmap)?;
        }
        let (bad, total, tensors) = nonfinite_parameters(&varmap)?;
        if bad > 0 {
            let listed = match tensors.len() {
                n if n > 4 => format!("{} and {} more tensors", tensors[..4].join(", "), n - 4),
                _ => tensors.join(", "),
            };
            let what = format!("{bad} of {total} parameter values are NaN or infinite (in {listed})");
            return Err(Diverged { epoch, what }.into());
        }
        let wall = epoch_start.elapsed().as_secs_f64();
        // Evaluated outside the epoch's wall time; no random draw, so the weights are unchanged.
        let test_loss = match (test, trainer.as_mut()) {
            (Some(t), Some(trainer)) => Some(trainer.mse(t, EVAL_CHUNK)),
            (Some(t), None) => Some(mse(model.as_ref(), t, device)?),
            (None, _) => None,
        };
        let stats = EpochStats { epoch, mean_loss: sum / steps_per_epoch as f64, test_loss };
        tracing::info!(
            "{} epoch {epoch}/{}: loss {:.5}{}, {:.1} s, {:.0} samples/s",
            s.label,
            s.epochs,
            stats.mean_loss,
            test_loss.map_or(String::new(), |t| format!(", test {t:.5}")),
            wall,
            n as f64 / wall
        );
        history.epochs.push(stats);
    }
    tracing::debug!("{}: {:.0} samples/s overall", s.label, (n * s.epochs) as f64 / started.elapsed().as_secs_f64());
    Ok((varmap, model, history))
}

/// The training images on the device, as bytes, and each epoch's order there: the autograd
/// path (other devices) cuts its batches on the device, with no copy from the host per step.
struct DeviceData {
    images: Tensor,
    order: Option<Tensor>,
    full_scale: Tensor,
}

impl DeviceData {
    fn new(train: &Split, device: &Device) -> candle_core::Result<Self> {
        Ok(Self {
            images: Tensor::from_slice(&train.images, (train.len(), train.shape.pixels()), device)?,
            order: None,
            full_scale: Tensor::new(255f32, device)?,
        })
    }

    fn epoch(&mut self, order: &[usize]) -> candle_core::Result<()> {
        let ids: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        self.order = Some(Tensor::from_vec(ids, order.len(), self.images.device())?);
        Ok(())
    }

    /// Images `start..start + len` of this epoch's order, as f32 in [0, 1]: `byte / 255`,
    /// the same values as [`batch_tensor`].
    fn batch(&self, start: usize, len: usize) -> candle_core::Result<Tensor> {
        let order = self.order.as_ref().expect("an epoch's order");
        let bytes = self.images.index_select(&order.narrow(0, start, len)?, 0)?;
        bytes.to_dtype(candle_core::DType::F32)?.broadcast_div(&self.full_scale)
    }
}

/// While alive, flushes subnormal floats to zero (FTZ and DAZ) on this thread and on every
/// rayon worker. Late in training, Adam's moment estimates of rarely-active weights decay into
/// the subnormal range, where x86 arithmetic is many times slower. Flushing values below
/// 1.2e-38 changes nothing that matters numerically and stays deterministic.
pub(crate) struct FlushDenormals {
    saved: Option<u64>,
}

/// The floating-point control register that holds the flush bits, where we know it.
#[cfg(target_arch = "x86_64")]
mod fp_mode {
    /// MXCSR's FTZ (bit 15) and DAZ (bit 6).
    pub const FLUSH: u64 = 0x8040;

    #[allow(deprecated)] // _mm_getcsr/_mm_setcsr: there is no other stable way to reach MXCSR.
    pub fn get() -> Option<u64> {
        // SAFETY: reading MXCSR has no side effects.
        Some(u64::from(unsafe { std::arch::x86_64::_mm_getcsr() }))
    }

    #[allow(deprecated)]
    pub fn set(value: u64) {
        // SAFETY: MXCSR is per-thread state; these bits only change how SSE arithmetic rounds
        // subnormals, never memory safety.
        unsafe { std::arch::x86_64::_mm_setcsr(value as u32) }
    }
}

/// FPCR's FZ (bit 24): flushes subnormal inputs and results of single and double precision
/// arithmetic, as FTZ + DAZ do on x86, with one difference: ARM decides "subnormal" before
/// rounding, x86 after, so a result that rounds up to exactly the smallest normal float is
/// kept on x86 and flushed here (rare; not exercised by CI, which runs on x86-64).
#[cfg(target_arch = "aarch64")]
mod fp_mode {
    pub const FLUSH: u64 = 1 << 24;

    pub fn get() -> Option<u64> {
        let value: u64;
        // SAFETY: reading FPCR has no side effects.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) value, options(nomem, nostack, preserves_flags)) };
        Some(value)
    }

    pub fn set(value: u64) {
        // SAFETY: FPCR is per-thread state; FZ replaces subnormal inputs and results of float
        // arithmetic with zero, which touches no memory.
        unsafe { std::arch::asm!("msr fpcr, {}", in(reg) value, options(nostack, preserves_flags)) }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod fp_mode {
    pub const FLUSH: u64 = 0;

    pub fn get() -> Option<u64> {
        None
    }

    pub fn set(_: u64) {}
}

impl FlushDenormals {
    pub(crate) fn on() -> Self {
        let saved = fp_mode::get();
        if let Some(saved) = saved {
            fp_mode::set(saved | fp_mode::FLUSH);
            rayon::broadcast(|_| fp_mode::set(saved | fp_mode::FLUSH));
        }
        Self { saved }
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            fp_mode::set(saved);
            rayon::broadcast(|_| fp_mode::set(saved));
        }
    }
}

/// One line that fits 80 columns for the usual ids: `train-mnist-conv-s42 3/20 [=====  ]
/// 812/1875 loss 0.01712, 12m05s left`.
fn epoch_bar(label: &str, epoch: usize, epochs: usize, steps: usize) -> ProgressBar {
    let bar = crate::progress::bar(steps as u64, "{prefix} [{bar:16}] {pos}/{len} {msg}");
    bar.set_prefix(format!("{label} {epoch}/{epochs}"));
    bar
}

/// `45s`, `12m05s`, `2h03m`.
pub fn short_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Mean squared error over every pixel of `split`.
pub fn mse(model: &dyn Autoencoder, split: &Split, device: &Device) -> anyhow::Result<f64> {
    mse_in(model, split, device, EVAL_CHUNK)
}

/// Images per forward pass when evaluating or encoding (and per partial sum of the test loss).
pub const EVAL_CHUNK: usize = 1000;

/// [`mse`] with the images taken `chunk` at a time.
pub fn mse_in(model: &dyn Autoencoder, split: &Split, device: &Device, chunk: usize) -> anyhow::Result<f64> {
    let mut sum = 0f64;
    for start in (0..split.len()).step_by(chunk) {
        let x = batch_tensor(split, start..(start + chunk).min(split.len()), device)?;
        let se = models::dense::squared_error_sum(&model.forward(&x)?, &x)?;
        sum += se;
    }
    Ok(sum / (split.len() * split.shape.pixels()) as f64)
}

/// The encoder's output for every image of `split`: [n, latent] row-major.
pub fn encode(model: &dyn Autoencoder, split: &Split, device: &Device) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::new();
    for start in (0..split.len()).step_by(EVAL_CHUNK) {
        let x = batch_tensor(split, start..(start + EVAL_CHUNK).min(split.len()), device)?;
        out.extend(model.encode(&x)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Reconstructions of the first `n` images: [n, pixels].
pub fn reconstruct(model: &dyn Autoencoder, split: &Split, n: usize, device: &Device) -> anyhow::Result<Vec<f32>> {
    let x = batch_tensor(split, 0..n.min(split.len()), device)?;
    Ok(model.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The autograd path (other devices; here on the CPU) reads its losses in bulk, every
    /// `READ_EVERY` steps and at each epoch's end, and records every step as the CPU trainer
    /// does, with the same bits.
    #[test]
    fn both_paths_record_every_step_and_agree() {
        let shape = crate::data::Shape::MNIST;
        let mut rng = crate::rng::Rng::new(5);
        let n = 8 * (READ_EVERY + 30) + 3;
        let images = (0..n * shape.pixels()).map(|_| if rng.next_f32() < 0.7 { 0 } else { (rng.next_u64() % 256) as u8 }).collect();
        let split = Split { shape, images, labels: vec![0; n] };
        let settings = TrainSettings {
            label: "test".into(),
            arch: Architecture::notebook_simple(),
            epochs: 2,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: 1,
        };
        let (_, _, ours) = fit_with(&split, None, &settings, &Device::Cpu, false).unwrap();
        let (_, _, autograd) = fit_with(&split, None, &settings, &Device::Cpu, true).unwrap();
        let steps = 2 * n.div_ceil(8);
        assert_eq!((ours.step_loss.len(), autograd.step_loss.len()), (steps, steps));
        // The CPU trainer sums as the autograd path does: the same bits, step by step.
        for (i, (a, b)) in ours.step_loss.iter().zip(&autograd.step_loss).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "step {i}: {a} vs {b}");
        }
        assert_eq!(ours.epochs, autograd.epochs);
    }

    #[test]
    fn durations_are_short() {
        assert_eq!([0.4, 45.0, 725.0, 7380.0].map(super::short_duration), ["0s", "45s", "12m05s", "2h03m"].map(String::from));
    }
}
