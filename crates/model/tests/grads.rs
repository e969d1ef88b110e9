//! One train-mode step against PyTorch: `shared/fixtures/resnet18_grads` (see its README) holds
//! the loss, every parameter's gradient and the BatchNorm running statistics after one forward
//! of torchvision's ResNet-18 from `resnet18_parity/weights_epoch0.safetensors` on 64 MNIST
//! training images. The convolutions here run cnnu's batch-wide kernels and their
//! hand-written backward; BatchNorm updates `running_var` with the unbiased variance.

mod common;

use common::step::{grads_dir, max_abs_diff, one_step};
use common::{device, read_all, relu_ties};

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(grads_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The share of a tensor's largest gradient that one flipped ReLU input on a 4x4 map may move
/// it by: the flip measured at layer2.1's residual sum moved layer2.1.conv2.weight by 1.13e-2
/// of its max |g| and everything before it by less; deeper flips get
/// `relu_ties::reach_factor` times it (crates/model/tests/common/relu_ties.rs).
const FLIP_SHARE: f64 = 2e-2;

#[test]
fn one_train_step_matches_pytorch_loss_gradients_and_running_stats() {
    let step = one_step(&device(), 64);
    let ties = step.ties;
    println!("ReLU inputs within float32 rounding of zero: {ties:?}");
    let manifest = manifest();
    let step0 = &manifest["step0"];
    let loss_value = step.loss;
    let want = step0["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want).abs() < 2e-5,
        "loss {loss_value} vs {want}"
    );

    let expected = read_all(&grads_dir().join("grads_step0.safetensors"));
    let ours: Vec<&String> = step.grads.keys().collect();
    let theirs: Vec<&String> = expected.keys().collect();
    assert_eq!(ours, theirs, "one gradient per parameter");
    let mut worst = (String::new(), 0.0f64);
    let mut failures = Vec::new();
    for (name, (_, want)) in &expected {
        let got = step
            .grads
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
            let share = FLIP_SHARE * relu_ties::reach_factor(name, &ties);
            tolerance = tolerance.max(share * scale);
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
    let saved = step.state;
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
