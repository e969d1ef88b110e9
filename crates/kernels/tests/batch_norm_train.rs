//! Train-mode BatchNorm: a hand-worked example, and the fused forward and backward against
//! Burn's autodiff differentiating the definition written as elementary tensor operations.

use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::batch_norm::{
    BatchNormShape, batch_norm_train_backward, batch_norm_train_forward,
};
use cnnu_kernels::batch_norm_train;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

fn assert_close(ours: &[f32], reference: &[f32], tol: f32, what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn hand_worked_channel() {
    // One channel, two images of two pixels: x = 1, 2 | 3, 4. mean 2.5, biased variance
    // 1.25, σ = sqrt(1.25) with eps 0; with gamma 2 and beta 1, y = 2 (x − 2.5) / σ + 1.
    let shape = BatchNormShape {
        batch: 2,
        channels: 1,
        pixels: 2,
    };
    let x = [1.0, 2.0, 3.0, 4.0];
    let fwd = batch_norm_train_forward(&x, shape, &[2.0], &[1.0], 0.0);
    let sigma = 1.25f32.sqrt();
    let want: Vec<f32> = x.iter().map(|v| 2.0 * (v - 2.5) / sigma + 1.0).collect();
    assert_close(&fwd.output, &want, 1e-6, "y");
    assert_eq!((fwd.mean[0], fwd.variance[0]), (2.5, 1.25));
    // dy = 1, 0, 0, 0: dbeta = 1; dgamma = x̂_0 = −1.5 / σ; with x̂ = (−1.5, −.5, .5, 1.5)/σ,
    // dx_i = gamma/σ · (dy_i − 1/4 − x̂_i · x̂_0 / 4).
    let back = batch_norm_train_backward(
        &x,
        &[1.0, 0.0, 0.0, 0.0],
        shape,
        &[2.0],
        [&[2.5], &[1.25]],
        0.0,
    );
    let xhat: Vec<f32> = x.iter().map(|v| (v - 2.5) / sigma).collect();
    let dx: Vec<f32> = (0..4)
        .map(|i| 2.0 / sigma * (f32::from(i == 0) - 0.25 - xhat[i] * xhat[0] / 4.0))
        .collect();
    assert_close(&back.x, &dx, 1e-6, "dx");
    assert_close(&back.gamma, &[xhat[0]], 1e-6, "dgamma");
    assert_close(&back.beta, &[1.0], 0.0, "dbeta");
}

/// BatchNorm as its definition, out of mean, subtraction and square root, for autodiff.
fn by_definition(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<4> {
    let c = x.dims()[1];
    let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
    let centred = x - mean;
    let var = centred
        .clone()
        .powi_scalar(2)
        .mean_dim(0)
        .mean_dim(2)
        .mean_dim(3);
    let y = centred / (var + eps).sqrt();
    y * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1])
}

#[test]
fn fused_train_batch_norm_matches_autodiff_of_the_definition() {
    let device = Device::flex().autodiff();
    device.seed(9);
    for shape in [[64, 64, 7, 7], [64, 512, 1, 1], [3, 5, 2, 3]] {
        let c = shape[1];
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.7, 2.0), &device);
        let weights = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let gamma = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.3), &device);
        let beta = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.3), &device);
        let run = |fused: bool| {
            let (x, g, b) = (
                x.clone().require_grad(),
                gamma.clone().require_grad(),
                beta.clone().require_grad(),
            );
            let (y, stats) = match fused {
                true => {
                    let r = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
                    (r.output, Some((r.mean, r.variance)))
                }
                false => (by_definition(x.clone(), g.clone(), b.clone(), 1e-5), None),
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let grad = |t: &Tensor<4>| values(t.grad(&grads).unwrap());
            let grad1 = |t: &Tensor<1>| values(t.grad(&grads).unwrap());
            (values(y), grad(&x), grad1(&g), grad1(&b), stats)
        };
        let (y, dx, dg, db, stats) = run(true);
        let (y_ref, dx_ref, dg_ref, db_ref, _) = run(false);
        assert_close(&y, &y_ref, 2e-5, "y");
        assert_close(&dx, &dx_ref, 1e-4, "dx");
        assert_close(&dg, &dg_ref, 1e-4, "dgamma");
        assert_close(&db, &db_ref, 1e-4, "dbeta");
        let (mean, var) = stats.unwrap();
        let per_channel = |t: Tensor<4>| values(t.mean_dim(0).mean_dim(2).mean_dim(3).reshape([c]));
        let x = x.clone().detach();
        assert_close(&values(mean), &per_channel(x.clone()), 1e-5, "mean");
        let centred = x.clone() - x.mean_dim(0).mean_dim(2).mean_dim(3);
        assert_close(
            &values(var),
            &per_channel(centred.powi_scalar(2)),
            1e-5,
            "variance",
        );
    }
}
