//! One train-mode step of ResNet-18 from a training reference's weights
//! (`cnnu_fixtures::Training`) on the first images of its batch 0: the loss, every gradient under its torchvision
//! name, the ReLU inputs inside the rounding band and the BatchNorm running statistics after
//! it. `grads.rs` holds it to PyTorch's fixture, `backends_agree.rs` one backend to another.

#![allow(dead_code)]

use std::collections::BTreeMap;

use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use cnnu_fixtures::{Training, read_f32s as read_all, read_i64s};
use cnnu_model::ResNetConfig;

use super::relu_ties;

/// What one step gives.
pub struct Step {
    /// The cross-entropy of the batch.
    pub loss: f32,
    /// Every parameter's gradient in PyTorch's layout, by torchvision name.
    pub grads: BTreeMap<String, Vec<f32>>,
    /// ReLU inputs within rounding of zero, in forward order (see `relu_ties`).
    pub ties: Vec<relu_ties::Tie>,
    /// Every ReLU input's name, H·W and values, in forward order.
    pub relu_inputs: Vec<(String, usize, Vec<f32>)>,
    /// The state dict after the step as it would be saved for PyTorch (running statistics
    /// updated), by torchvision name.
    pub state: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// The first `n` images of a reference's training input and their labels, on `device`.
pub fn batch(reference: &Training, n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let labels = read_i64s(&reference.input, "labels")[..n].to_vec();
    let (_, images) = &read_all(&reference.input)["input"];
    let x = TensorData::new(images[..n * 784].to_vec(), [n, 1, 28, 28]);
    (
        Tensor::from_data(x, device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

/// One step on the first `n` images, on `device` (a plain device; autodiff is added here).
pub fn one_step(reference: &Training, device: &Device, n: usize) -> Step {
    let device = device.clone().autodiff();
    let model = ResNetConfig::new()
        .init(&device)
        .unwrap()
        .load_torchvision(&reference.weights.path)
        .unwrap();
    let (x, y) = batch(reference, n, &device);
    let (logits, relu_inputs) = model.forward_taps(x, &model.catalogue().relu_inputs());
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, y);
    let relu_inputs = relu_ties::read_inputs(&relu_inputs);
    let ties = relu_ties::ties_in(&relu_inputs);
    let value: f32 = loss.clone().into_scalar();
    let gradients = loss.backward();
    let mut by_name = GradsByName {
        grads: &gradients,
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    model.visit(&mut by_name);
    let grads = by_name.out;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("after.safetensors");
    // Burn's RunningState applies the update lazily; `valid` settles it.
    model.valid().save_torchvision(&path).unwrap();
    Step {
        loss: value,
        grads,
        ties,
        relu_inputs,
        state: read_all(&path),
    }
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

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
