//! One train-mode step against PyTorch: a training reference (`cnnu_fixtures::Training`: the
//! repository's formula weights on 32 MNIST training images, and `shared/fixtures/resnet18_grads`
//! from `resnet18_parity/weights_epoch0.safetensors` on 64 when the shared folder is there; see
//! their READMEs) holds the loss, the parameters' gradients (the repository's a subset, and the
//! largest |g| of every one) and the BatchNorm running statistics after one forward of
//! torchvision's ResNet-18. The convolutions here run cnnu's batch-wide kernels and their
//! hand-written backward; BatchNorm updates `running_var` with the unbiased variance.

mod common;

use cnnu_fixtures::{Training, read_f32s as read_all};
use common::step::{max_abs_diff, one_step};
use common::{device, relu_ties};

/// The share of a tensor's largest gradient that one flipped ReLU input on a 4x4 map may move
/// it by: the flip measured at layer2.1's residual sum moved layer2.1.conv2.weight by 1.13e-2
/// of its max |g| and everything before it by less; deeper flips get
/// `relu_ties::reach_factor` times it (crates/model/tests/common/relu_ties.rs).
const FLIP_SHARE: f64 = 2e-2;

#[test]
fn one_train_step_from_formula_weights_matches_pytorch() {
    check_step(Training::formula());
}

#[test]
fn one_train_step_from_the_shared_weights_matches_pytorch() {
    if let Some(reference) = Training::shared() {
        check_step(reference);
    }
}

/// The loss, the gradients and the running statistics after one step on a reference's batch 0.
fn check_step(reference: Training) {
    let step = one_step(&reference, &device(), reference.batch_size);
    let ties = step.ties;
    println!(
        "{}: ReLU inputs within float32 rounding of zero: {ties:?}",
        reference.name
    );
    let manifest = reference.manifest();
    let step0 = &manifest["step0"];
    let loss_value = step.loss;
    let want = step0["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want).abs() < 2e-5,
        "loss {loss_value} vs {want}"
    );

    let expected = read_all(&reference.dir.join("grads_step0.safetensors"));
    let ours: Vec<&String> = step.grads.keys().collect();
    let theirs = step0["grad_max_abs"].as_object().unwrap();
    assert_eq!(
        ours,
        theirs.keys().collect::<Vec<_>>(),
        "one gradient per parameter"
    );
    assert!(expected.len() >= 40, "{} gradients stored", expected.len());
    // Every parameter's largest |g| (the stored gradients are compared element by element below).
    for (name, got) in &step.grads {
        let want = theirs[name.as_str()].as_f64().unwrap();
        let got = got.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
        let gap = step0["grad_max_abs_diff_f32_vs_f64"][name]
            .as_f64()
            .unwrap();
        let mut tolerance = (8.0 * gap).max(1e-5 * want);
        if relu_ties::reached_by(name, &ties) {
            tolerance = tolerance.max(FLIP_SHARE * relu_ties::reach_factor(name, &ties) * want);
        }
        assert!(
            (got - want).abs() <= tolerance,
            "{name}: max |g| {got:e} vs torch {want:e}"
        );
    }
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
        "{}: worst gradient difference: {} at {:e} of max |g|",
        reference.name, worst.0, worst.1
    );

    // The running statistics, as the model would be saved for PyTorch.
    let saved = step.state;
    let stats = read_all(&reference.dir.join("bn_stats_step0.safetensors"));
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
