//! Training and probing speed on the default backend, beside PyTorch eager measured the same
//! way by `benches/pytorch_reference.py` (the README has both).
//!
//! The training step is also split into its phases: data, forward (+ loss), backward, and the
//! optimizer as what the full step takes beyond the other three.
//! Run with `cargo bench --bench training`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use cnnu::kernels::FusedAdam;
use cnnu::model::{BackendKind, ResNetConfig};
use cnnu::train::{DEFAULT_TAPS, DatasetKind, ImageDataset};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The repository's MNIST slice: its 2000 test images are more than any batch here.
fn test_split() -> ImageDataset {
    ImageDataset::read(DatasetKind::Mnist, &cnnu_fixtures::mnist_small())
        .expect("the repository's MNIST")
}

/// The first `n` test images and labels.
fn batch(mnist: &ImageDataset, n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let idx: Vec<usize> = (0..n).collect();
    let x = Tensor::from_data(
        TensorData::new(mnist.normalized(&mnist.test, &idx), [n, 1, 28, 28]),
        device,
    );
    let labels: Vec<i64> = idx.iter().map(|&i| mnist.test.labels[i] as i64).collect();
    (x, Tensor::from_data(TensorData::new(labels, [n]), device))
}

fn training(c: &mut Criterion) {
    // As the `cnnu` binary does: the figures are what a user's run gets.
    cnnu::kernels::keep_freed_memory();
    let split = test_split();
    let device = BackendKind::from_env().unwrap().device().unwrap();
    let ad = device.clone().autodiff();
    let mut group = c.benchmark_group("train_batch64");
    group.sample_size(10).throughput(Throughput::Elements(64));
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);

    group.bench_function("data", |b| b.iter(|| batch(&split, 64, &ad).0.into_data()));
    let model = ResNetConfig::new().init(&ad).unwrap();
    // Forward and backward are timed apart with `iter_custom`: a forward whose graph is never
    // consumed by a backward would keep its autodiff graph alive and slow every later step.
    group.bench_function("forward", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (x, y) = batch(&split, 64, &ad);
                let start = Instant::now();
                let loss = loss_fn.forward(model.forward(x), y);
                let _: f32 = loss.clone().into_scalar();
                spent += start.elapsed();
                GradientsParams::from_grads(loss.backward(), &model);
            }
            spent
        })
    });
    group.bench_function("backward", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (x, y) = batch(&split, 64, &ad);
                let loss = loss_fn.forward(model.forward(x), y);
                let _: f32 = loss.clone().into_scalar();
                let start = Instant::now();
                GradientsParams::from_grads(loss.backward(), &model);
                spent += start.elapsed();
            }
            spent
        })
    });
    // The optimizer `cnnu train` uses.
    let mut optim = FusedAdam::new(0.9, 0.999, 1e-8).init();
    let mut model = Some(model);
    group.bench_function("full_step", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            let (x, y) = batch(&split, 64, &ad);
            let grads =
                GradientsParams::from_grads(loss_fn.forward(m.forward(x), y).backward(), &m);
            let m = optim.step(1e-3, m, grads);
            // Reading one weight back forces the lazy update to run inside the timing.
            let _: Vec<f32> =
                m.fc.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .unwrap();
            model = Some(m);
        })
    });
    group.finish();
}

fn probing(c: &mut Criterion) {
    let split = test_split();
    let device = BackendKind::from_env().unwrap().device().unwrap();
    let model = ResNetConfig::new().init(&device).unwrap().valid();
    let taps = model.catalogue().parse(DEFAULT_TAPS).unwrap();
    let mut group = c.benchmark_group("probe");
    group.sample_size(10);
    for n in [64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        let (x, _) = batch(&split, n, &device);
        group.bench_function(format!("logits_batch{n}"), |b| {
            b.iter(|| model.forward(x.clone()).into_data())
        });
        group.bench_function(format!("default_taps_batch{n}"), |b| {
            b.iter(|| {
                let (y, recorded) = model.forward_taps(x.clone(), &taps);
                let bytes: usize = recorded
                    .into_iter()
                    .map(|(_, t)| t.into_data().as_bytes().len())
                    .sum();
                (y.into_data(), bytes)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, training, probing);
criterion_main!(benches);
