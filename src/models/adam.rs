//! PyTorch's `torch.optim.Adam`: betas (0.9, 0.999), eps 1e-8, bias correction, and
//! `weight_decay` as L2 added to the gradient (not AdamW's decoupled decay). The update is
//! written in PyTorch's order of operations:
//!
//! ```text
//! g = grad + wd * p;  m = m + (1 - b1) * (g - m);  v = b2 * v + (1 - b2) * g * g
//! p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//! On the CPU the update runs in place over each parameter (one pass, no temporaries);
//! elsewhere with tensor ops.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Tensor, Var};

#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamConfig {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }
}

enum Moments {
    Cpu { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

pub struct Adam {
    cfg: AdamConfig,
    params: Vec<(Var, Moments)>,
    step: u64,
}

/// The scalars of one step, in f32 as PyTorch's CPU kernels use them.
#[derive(Clone, Copy)]
pub(super) struct Scalars {
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    wd: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

struct Kernel<'a> {
    s: Scalars,
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
}

impl InplaceOp2 for Kernel<'_> {
    fn name(&self) -> &'static str {
        "adam-pt"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dl: &Layout, src: &CpuStorage, sl: &Layout) -> Result<()> {
        let (Some((d0, d1)), Some((s0, s1))) = (dl.contiguous_offsets(), sl.contiguous_offsets()) else {
            bail!("adam: parameter and gradient must be contiguous")
        };
        let p = match dst {
            CpuStorage::F32(p) => &mut p[d0..d1],
            _ => bail!("adam: parameters must be f32"),
        };
        let g = &src.as_slice::<f32>()?[s0..s1];
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        update_slices(&self.s, p, g, &mut m, &mut v);
        Ok(())
    }
}

impl Scalars {
    /// The scalars of step `step` (counted from 1).
    pub(super) fn new(c: &AdamConfig, step: u64) -> Self {
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        Scalars {
            one_minus_b1: (1.0 - c.beta1) as f32,
            b2: c.beta2 as f32,
            one_minus_b2: (1.0 - c.beta2) as f32,
            wd: c.weight_decay as f32,
            step_size: (c.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: c.eps as f32,
        }
    }
}

/// One Adam step over a parameter slice `p` with gradient `g` and moments `m`, `v`, in place:
/// a branch-free loop over zipped slices, so the compiler vectorises it (sqrt and division
/// are exact in IEEE arithmetic: the same bits at every width).
#[inline(always)]
pub(super) fn update_slices(s: &Scalars, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let update = |p: &mut f32, grad: f32, m: &mut f32, v: &mut f32| {
        *m += s.one_minus_b1 * (grad - *m);
        *v = *v * s.b2 + s.one_minus_b2 * grad * grad;
        *p -= s.step_size * (*m / (v.sqrt() / s.bc2_sqrt + s.eps));
    };
    let lanes = p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
    if s.wd != 0.0 {
        lanes.for_each(|((p, &g), (m, v))| update(p, g + s.wd * *p, m, v));
    } else {
        lanes.for_each(|((p, &g), (m, v))| update(p, g, m, v));
    }
}

impl Adam {
    pub fn new(vars: Vec<Var>, cfg: AdamConfig) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|var| {
                let moments = if var.device().is_cpu() {
                    let n = var.elem_count();
                    Moments::Cpu { m: vec![0.0; n], v: vec![0.0; n] }
                } else {
                    Moments::Device { m: var.zeros_like()?, v: var.zeros_like()? }
                };
                Ok((var, moments))
            })
            .collect::<Result<_>>()?;
        Ok(Self { cfg, params, step: 0 })
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let (bc1, bc2) = (1.0 - c.beta1.powi(self.step as i32), 1.0 - c.beta2.powi(self.step as i32));
        let s = Scalars::new(&c, self.step);
        for (var, moments) in &mut self.params {
            let Some(grad) = grads.get(var.as_tensor()) else { continue };
            match moments {
                Moments::Cpu { m, v } => {
                    let kernel = Kernel { s, m: RefCell::new(m), v: RefCell::new(v) };
                    var.as_tensor().inplace_op2(&grad.contiguous()?, &kernel)?;
                }
                Moments::Device { m, v } => {
                    // Detached inputs: the moments must not record the ops that made them, or
                    // each step's graph (activations included) stays alive through them.
                    let (p, grad) = (var.as_tensor().detach(), grad.detach());
                    let g = if c.weight_decay != 0.0 { (grad + p.affine(c.weight_decay, 0.0)?)? } else { grad };
                    *m = (&*m + ((&g - &*m)? * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let update = ((&*m / denom)? * (c.lr / bc1))?;
                    var.set(&p.sub(&update)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Values from `torch.optim.Adam([p], lr=0.1, weight_decay=0.5)` minimising
    /// sum(p^2 * [1, 2, 3]) for three steps from p = [1, -2, 0.5], computed by hand with the
    /// formula above in f64 (PyTorch in f32 agrees to ~1e-7).
    #[test]
    fn matches_reference_steps() {
        let dev = Device::Cpu;
        let p0 = [1.0f64, -2.0, 0.5];
        let w = [1.0f64, 2.0, 3.0];
        let (lr, wd, b1, b2, eps) = (0.1, 0.5, 0.9, 0.999, 1e-8);
        let mut p = p0;
        let (mut m, mut v) = ([0.0f64; 3], [0.0f64; 3]);
        for t in 1..=3 {
            for i in 0..3 {
                let g = 2.0 * w[i] * p[i] + wd * p[i];
                m[i] += (1.0 - b1) * (g - m[i]);
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
                p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
            }
        }
        for device_path in [false, true] {
            let var = Var::from_slice(&p0.map(|x| x as f32), 3, &dev).unwrap();
            let weights = Tensor::from_slice(&w.map(|x| x as f32), 3, &dev).unwrap();
            let mut opt = Adam::new(vec![var.clone()], AdamConfig { lr, beta1: b1, beta2: b2, eps, weight_decay: wd }).unwrap();
            if device_path {
                opt.params[0].1 = Moments::Device { m: var.zeros_like().unwrap(), v: var.zeros_like().unwrap() };
            }
            for _ in 0..3 {
                let loss = var.as_tensor().sqr().unwrap().mul(&weights).unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            if let Moments::Device { m, v } = &opt.params[0].1 {
                // A moment that tracked its ops would keep every step's graph alive (GPU OOM).
                assert!(!m.track_op() && !v.track_op(), "the moments record their history");
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for i in 0..3 {
                assert!((got[i] as f64 - p[i]).abs() < 1e-6, "path {device_path}: {got:?} vs {p:?}");
            }
        }
    }
}
