//! Training and encoding through the real pipeline on a small config (real MNIST, 2,000
//! training images, one epoch).

mod common;

use common::Project;
use latentscope::data::Shape;
use latentscope::models::Architecture;

/// The notebook's two models, by the names the shipped config gives them.
fn notebook() -> [(&'static str, Architecture); 2] {
    [("simple", Architecture::notebook_simple()), ("conv", Architecture::notebook_conv())]
}
use latentscope::tensorfile::TensorFile;
use safetensors::Dtype;

#[test]
fn trains_and_encodes_both_models() {
    let p = Project::mnist("train", 2000);
    let out = p.ok(&["pipeline", "run", "--json", "encode-mnist-simple-s42", "encode-mnist-conv-s42"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ran"].as_array().unwrap().len(), 5, "{v}");

    for (name, arch) in notebook() {
        let dir = p.artifacts().join(format!("train-mnist-{name}-s42"));
        // The weights carry exactly the PyTorch state-dict names and shapes.
        let model = TensorFile::open(&dir.join("model.safetensors")).unwrap();
        for param in arch.parameters(Shape::MNIST) {
            let (shape, _) = model.get(&param.name, Dtype::F32).unwrap();
            assert_eq!(shape, param.shape, "{}", param.name);
        }
        let history: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("history.json")).unwrap()).unwrap();
        let losses: Vec<f64> = history["step_loss"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(losses.len(), 2000usize.div_ceil(32));
        let head = losses[..5].iter().sum::<f64>() / 5.0;
        let tail = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(tail < 0.8 * head, "{}: loss did not fall: {head} -> {tail}", name);
        assert_eq!(history["epochs"].as_array().unwrap().len(), 1);
        assert_eq!(history["device"], "cpu");
        let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
        let mse = metrics["test_mse"].as_f64().unwrap();
        assert!(mse > 0.0 && mse < 0.9 * head, "{}: test MSE {mse}, first losses {head}", name);

        // PyTorch-style metadata, as safetensors files made by PyTorch carry it on the Hub.
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
        let enc = p.artifacts().join(format!("encode-mnist-{name}-s42"));
        let bytes = std::fs::read(enc.join("latent.safetensors")).unwrap();
        let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap();
        assert_eq!(meta["source"], format!("train-mnist-{name}-s42 latents of the test split of mnist"));
        let latent = TensorFile::open(&enc.join("latent.safetensors")).unwrap();
        assert_eq!(latent.get("latent", Dtype::F32).unwrap().0, [10000, arch.latent_dim()]);
        let (shape, labels) = latent.get("labels", Dtype::U8).unwrap();
        assert_eq!(shape, [10000]);
        assert_eq!(labels[..5], [7, 2, 1, 0, 4]);
        let recon = TensorFile::open(&enc.join("reconstructions.safetensors")).unwrap();
        let (shape, bytes) = recon.get("images", Dtype::F32).unwrap();
        assert_eq!(shape, [9, 1, 28, 28]);
        let values = latentscope::tensorfile::f32_values(bytes);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    // Editing the conv model's settings re-runs only its training and encoding.
    let status = p.ok(&["pipeline", "status", "--set", "models.conv.epochs=2"]);
    let line = |id: &str| status.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap().to_owned();
    assert!(line("train-mnist-simple-s42").contains("fresh"), "{status}");
    assert!(line("encode-mnist-simple-s42").contains("fresh"), "{status}");
    assert!(line("train-mnist-conv-s42").contains("params changed: models.conv.epochs 1 -> 2"), "{status}");
    assert!(line("encode-mnist-conv-s42").contains("upstream stale: train-mnist-conv-s42"), "{status}");
    let out = p.ok(&["pipeline", "run", "--json", "encode-mnist-simple-s42", "encode-mnist-conv-s42", "--set", "models.conv.epochs=2"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ran"], serde_json::json!(["train-mnist-conv-s42", "encode-mnist-conv-s42"]));
}

#[test]
fn training_is_bitwise_reproducible_across_thread_counts_and_kernel_builds() {
    // Every output (weights, history, metrics), not only the weights: no timing in any file.
    // The last run uses the plain scalar kernels (LATENTSCOPE_KERNELS=portable): the fast
    // kernels (whatever SIMD this CPU has) must give their bits, which is how an AVX2 laptop
    // and an AVX-512 server agree.
    let hashes: Vec<Vec<serde_json::Value>> = [("1", "fast"), ("2", "fast"), ("2", "fast"), ("2", "portable")]
        .iter()
        .enumerate()
        .map(|(i, (threads, kernels))| {
            let p = Project::mnist(&format!("determinism-{i}"), 512);
            let out = p
                .cmd(&["pipeline", "run", "train-mnist-simple-s42", "train-mnist-conv-s42"])
                .env("RAYON_NUM_THREADS", threads)
                .env(latentscope::models::dense::KERNELS_ENV, kernels)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", common::text(&out.stderr));
            let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap();
            notebook()
                .iter()
                .map(|(n, _)| {
                    let outputs = &lock["stages"][format!("train-mnist-{n}-s42")]["outputs"];
                    assert!(outputs["history.json"].is_object(), "{outputs}");
                    serde_json::Value::Object(outputs.as_object().unwrap().iter().map(|(f, r)| (f.clone(), r["blake3"].clone())).collect())
                })
                .collect()
        })
        .collect();
    assert_eq!(hashes[0], hashes[1], "1 thread vs 2 threads");
    assert_eq!(hashes[1], hashes[2], "two runs with 2 threads");
    assert_eq!(hashes[2], hashes[3], "fast kernels vs the portable scalar ones");
}
