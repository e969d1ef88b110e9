//! One train-mode step against PyTorch: `shared/fixtures/resnet18_grads` (see its README) holds
//! the loss, every parameter's gradient and the BatchNorm running statistics after one forward
//! of torchvision's ResNet-18 from `resnet18_parity/weights_epoch0.safetensors` on 64 MNIST
//! training images. The convolutions here run cnnu's batch-wide kernels and their
//! hand-written backward; BatchNorm updates `running_var` with the unbiased variance.

mod common;

use std::collections::BTreeMap;

use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use cnnu_model::{ResNet, ResNetConfig};
use common::{device, parity_dir, read_all, relu_ties, shared_dir};

fn grads_dir() -> std::path::PathBuf {
    shared_dir().join("fixtures/resnet18_grads")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(grads_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The first `n` fixture images and their labels, on `device`.
fn batch(n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let path = grads_dir().join("input.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let labels: Vec<i64> = st
        .tensor("labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .take(n)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (_, images) = &read_all(&path)["input"];
    let x = TensorData::new(images[..n * 784].to_vec(), [n, 1, 28, 28]);
    (
        Tensor::from_data(x, device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

/// Collects every parameter's gradient under its torchvision name, in PyTorch's layout.
struct GradsByName<'a> {
    grads: &'a burn::tensor::Gradients,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl ModuleVisitor for GradsByName<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let mut name = self.path.join(".");
        for (burn, torch) in [(".gamma", ".weight"), (".beta", ".bias")] {
            if let Some(stem) = name.strip_suffix(burn) {
                name = format!("{stem}{torch}");
            }
        }
        // Running statistics are visited too, and have no gradient.
        let Some(g) = t.grad(self.grads) else { return };
        // Burn's Linear weight is [in, out]; PyTorch's is [out, in].
        let g = if D == 2 { g.transpose() } else { g };
        self.out
            .insert(name, g.into_data().convert::<f32>().try_into_vec().unwrap());
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model(device: &Device) -> ResNet {
    ResNetConfig::new()
        .init(device)
        .unwrap()
        .load_torchvision(parity_dir().join("weights_epoch0.safetensors"))
        .unwrap()
}

/// The share of a tensor's largest gradient that one flipped ReLU input may move it by: the
/// flip measured at layer2.1's residual sum moved layer2.1.conv2.weight by 1.13e-2 of its max
/// |g| and everything before it by less (crates/model/tests/common/relu_ties.rs).
const FLIP_SHARE: f64 = 2e-2;

#[test]
fn one_train_step_matches_pytorch_loss_gradients_and_running_stats() {
    let device = device().autodiff();
    let model = model(&device);
    let (x, y) = batch(64, &device);
    let (logits, relu_inputs) = model.forward_taps(x, &model.catalogue().relu_inputs());
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, y);
    let ties = relu_ties::relu_ties(&relu_inputs);
    println!("ReLU inputs within float32 rounding of zero: {ties:?}");
    let manifest = manifest();
    let step0 = &manifest["step0"];
    let loss_value: f32 = loss.clone().into_scalar();
    let want = step0["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want).abs() < 2e-5,
        "loss {loss_value} vs {want}"
    );

    let grads = loss.backward();
    let mut by_name = GradsByName {
        grads: &grads,
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    model.visit(&mut by_name);
    let expected = read_all(&grads_dir().join("grads_step0.safetensors"));
    let ours: Vec<&String> = by_name.out.keys().collect();
    let theirs: Vec<&String> = expected.keys().collect();
    assert_eq!(ours, theirs, "one gradient per parameter");
    let mut worst = (String::new(), 0.0f64);
    let mut failures = Vec::new();
    for (name, (_, want)) in &expected {
        let got = by_name
            .out
            .get(name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let scale = step0["grad_max_abs"][name].as_f64().unwrap();
        let f64_gap = step0["grad_max_abs_diff_f32_vs_f64"][name]
            .as_f64()
            .unwrap();
        let diff = max_abs_diff(got, want) as f64;
        // PyTorch's own float32 gradients are `f64_gap` from exact; ours may sum in another
        // order, so allow a few times that, or 1e-5 of the tensor's largest gradient; before
        // a ReLU input that rounding can flip, what a flip moves (see relu_ties).
        let mut tolerance = (8.0 * f64_gap).max(1e-5 * scale);
        if relu_ties::reached_by(name, &ties) {
            tolerance = tolerance.max(FLIP_SHARE * scale);
        }
        if diff > tolerance {
            failures.push(format!(
                "{name}: max |ours − torch| = {diff:e} ({:e} of max |g|), f32-vs-f64 gap {f64_gap:e}",
                diff / scale
            ));
        }
        if diff / scale > worst.1 {
            worst = (name.clone(), diff / scale);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "worst gradient difference: {} at {:e} of max |g|",
        worst.0, worst.1
    );

    // The running statistics, as the model would be saved for PyTorch.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("after.safetensors");
    // Burn's RunningState applies the update lazily; `valid` settles it.
    model.valid().save_torchvision(&path).unwrap();
    let saved = read_all(&path);
    let stats = read_all(&grads_dir().join("bn_stats_step0.safetensors"));
    assert!(stats.len() >= 40, "{} running statistics", stats.len());
    for (name, (_, want)) in &stats {
        let diff = max_abs_diff(&saved[name].1, want);
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{name}: max |ours − torch| = {diff:e}"
        );
    }
}
