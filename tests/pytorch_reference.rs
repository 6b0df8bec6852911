//! Our PyTorch-semantics pieces against values PyTorch computed
//! (tests/data/pytorch_reference.py wrote tests/data/pytorch_reference.json).

use candle_core::{Device, Tensor, Var};
use latentscope::models::adam::{Adam, AdamConfig};
use latentscope::models::ops::{conv2d, conv_transpose2d, max_pool2x2, relu, relu_max_pool2x2};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/pytorch_reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(v), shape, &Device::Cpu).unwrap()
}

fn assert_close(got: &Tensor, want: &Value, tol: f32, what: &str) {
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = floats(want);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: ours {g}, PyTorch {w}");
    }
}

#[test]
fn max_pool_over_relu_matches_pytorch_with_ties_and_zeros() {
    let r = &reference()["maxpool"];
    let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let x = Var::from_tensor(&tensor(&r["x"], &shape)).unwrap();
    let proj = tensor(&r["proj"], &[1, 2, 2, 4]);
    let separate = max_pool2x2(&relu(x.as_tensor()).unwrap()).unwrap();
    let fused = relu_max_pool2x2(x.as_tensor()).unwrap();
    for (name, y) in [("separate", separate), ("fused", fused)] {
        assert_close(&y, &r["y"], 0.0, &format!("{name} y"));
        let grads = y.mul(&proj).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(grads.get(x.as_tensor()).unwrap(), &r["grad_x"], 0.0, &format!("{name} grad_x"));
    }
}

struct Chain {
    vars: Vec<Var>,
}

impl Chain {
    fn new(params: &Value) -> Self {
        let shapes: [&[usize]; 4] = [&[2, 1, 3, 3], &[2], &[2, 1, 3, 3], &[1]];
        let vars = shapes.iter().enumerate().map(|(i, s)| Var::from_tensor(&tensor(&params[i], s)).unwrap()).collect();
        Self { vars }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let v: Vec<&Tensor> = self.vars.iter().map(|v| v.as_tensor()).collect();
        let h = relu_max_pool2x2(&conv2d(x, v[0], v[1], 1, 1).unwrap()).unwrap();
        candle_nn::ops::sigmoid(&conv_transpose2d(&h, v[2], v[3], 2, 1, 1).unwrap()).unwrap()
    }

    fn loss(&self, x: &Tensor) -> Tensor {
        self.forward(x).sub(x).unwrap().sqr().unwrap().mean_all().unwrap()
    }
}

#[test]
fn conv_chain_values_gradients_and_adam_match_pytorch() {
    let r = &reference()["chain"];
    let x = Var::from_tensor(&tensor(&r["x"], &[2, 1, 6, 6])).unwrap();
    let chain = Chain::new(&r["params"]);
    let recon = chain.forward(x.as_tensor());
    assert_close(&recon, &r["recon"], 1e-6, "recon");
    // PyTorch's loss treats the target as a constant: detach it here too.
    let loss = recon.sub(&x.as_tensor().detach()).unwrap().sqr().unwrap().mean_all().unwrap();
    assert!((loss.to_scalar::<f32>().unwrap() - r["loss"].as_f64().unwrap() as f32).abs() < 1e-7);
    let grads = loss.backward().unwrap();
    assert_close(grads.get(x.as_tensor()).unwrap(), &r["grad_x"], 1e-5, "grad_x");
    for (i, v) in chain.vars.iter().enumerate() {
        assert_close(grads.get(v.as_tensor()).unwrap(), &r["grads"][i], 1e-5, &format!("grad param {i}"));
    }

    let mut opt = Adam::new(chain.vars.clone(), AdamConfig::new(0.01, 0.1)).unwrap();
    let x = x.as_tensor().detach();
    for _ in 0..2 {
        opt.step(&chain.loss(&x).backward().unwrap()).unwrap();
    }
    for (i, v) in chain.vars.iter().enumerate() {
        assert_close(v.as_tensor(), &r["after_two_adam_steps"][i], 1e-5, &format!("param {i} after Adam"));
    }
}
