//! The one-pass eval-mode BatchNorm against Burn's `batch_norm`, bit for bit.

use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::batch_norm_eval;

fn bits(t: Tensor<4>) -> Vec<u32> {
    let v: Vec<f32> = t.into_data().convert::<f32>().try_into_vec().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}

#[test]
fn eval_batch_norm_is_burns_bit_for_bit() {
    let device = Device::flex();
    device.seed(4);
    for shape in [[64, 64, 14, 14], [3, 512, 1, 1], [2, 5, 3, 7]] {
        let c = shape[1];
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.3, 2.0), &device);
        let stat = |mean, sd| Tensor::<1>::random([c], Distribution::Normal(mean, sd), &device);
        let (g, b, m) = (stat(1.0, 0.3), stat(0.0, 0.3), stat(0.1, 0.5));
        let v = stat(0.0, 1.0).abs() + 0.01;
        // A second holder of x: the kernel must not write into a shared buffer.
        let kept = x.clone();
        let before = bits(x.clone());
        let ours = batch_norm_eval(x.clone(), g.clone(), b.clone(), m.clone(), v.clone(), 1e-5);
        let burn = burn::tensor::module::batch_norm(x, g, b, m, v, 1e-5);
        assert_eq!(bits(ours), bits(burn), "{shape:?}");
        assert_eq!(bits(kept), before, "the input is untouched");
    }
}
