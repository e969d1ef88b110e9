//! The check for a machine with a GPU and no network (`scripts/gpu-check` builds and runs it):
//! per compiled backend, PyTorch parity at all 149 taps of ResNet-34 (the
//! `resnet34_cifar_parity` fixture, whose weights are a formula, so nothing large travels) and
//! one full-MNIST training epoch timed beside flex on the same machine.
//!
//! ```text
//! gpu_check --fixture DIR --mnist DIR [--backends flex,wgpu,vulkan,cuda] [--train-limit N] [--parity-only]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use cnnu_model::{BackendKind, ResNetConfig, formula};
use cnnu_train::{
    DatasetKind, ImageDataset, NamedTensor, RunDir, RunOptions, SampleAt, TrainConfig, tensor_file,
};

/// One backend's figures.
struct Row {
    backend: BackendKind,
    worst_parity: f32,
    worst_tap: String,
    parity_seconds: f64,
    epoch_seconds: f64,
    images_per_second: f64,
    test_accuracy: f64,
}

struct Args {
    fixture: PathBuf,
    mnist: PathBuf,
    backends: Vec<BackendKind>,
    train_limit: Option<usize>,
    parity_only: bool,
}

fn parse_args() -> Result<Args> {
    let mut fixture = None;
    let mut mnist = None;
    let mut backends = BackendKind::compiled();
    let mut train_limit = None;
    let mut parity_only = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--parity-only" {
            parity_only = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--fixture" => fixture = Some(PathBuf::from(value)),
            "--mnist" => mnist = Some(PathBuf::from(value)),
            "--backends" => {
                backends = value
                    .split(',')
                    .map(|b| Ok(b.parse::<BackendKind>()?.ensure_compiled()?))
                    .collect::<Result<_>>()?
            }
            "--train-limit" => train_limit = Some(value.parse()?),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(Args {
        fixture: fixture.context("--fixture DIR (resnet34_cifar_parity) is required")?,
        mnist: mnist.context("--mnist DIR is required")?,
        backends,
        train_limit,
        parity_only,
    })
}

/// The fixture's state-dict keys (name, shape) in `state_dict()` order.
fn state_dict_keys(fixture: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let text = std::fs::read_to_string(fixture.join("manifest.json"))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    let entries = manifest["state_dict"]
        .as_array()
        .context("manifest.json: no state_dict")?;
    entries
        .iter()
        .map(|e| {
            let name = e[0].as_str().context("state_dict name")?.to_string();
            let dims = e[1].as_array().context("state_dict shape")?;
            let shape = dims.iter().map(|d| d.as_u64().map(|d| d as usize));
            Ok((
                name,
                shape.collect::<Option<_>>().context("state_dict shape")?,
            ))
        })
        .collect()
}

/// Worst |ours − torch| / max(|torch|) over every tap, and where.
fn parity(backend: BackendKind, fixture: &Path, weights: &Path) -> Result<(f32, String)> {
    let device = backend.device()?;
    let config = ResNetConfig::of_torchvision_file(weights)?;
    let model = config.init(&device)?.load_torchvision(weights)?.valid();
    let (shape, input) = tensor_file::read_f32(&fixture.join("input.safetensors"), "input")?;
    let x = Tensor::<4>::from_data(TensorData::new(input, shape), &device);
    let (_, taps) = model.forward_taps(x, &model.catalogue().all());
    let expected = std::fs::read(fixture.join("expected.safetensors"))?;
    let expected = safetensors::SafeTensors::deserialize(&expected)?;
    let mut worst = (0.0f32, String::new());
    for (name, want) in expected.tensors() {
        let ours = taps.get(&name).with_context(|| format!("no tap {name}"))?;
        let got = ours
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()?;
        let want: Vec<f32> = want
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        if diff / scale >= worst.0 {
            worst = (diff / scale, name);
        }
    }
    Ok(worst)
}

/// One epoch of MNIST (batch 64, Adam, only `fc` sampled) and its seconds, img/s and test
/// accuracy, from the run's own metrics.
fn epoch(
    backend: BackendKind,
    data: &ImageDataset,
    out: &Path,
    limit: Option<usize>,
) -> Result<(f64, f64, f64)> {
    let config = TrainConfig::new()
        .with_dataset(DatasetKind::Mnist)
        .with_epochs(1)
        .with_train_limit(limit)
        // A shortened check (on lavapipe, say) shortens the test pass too.
        .with_test_limit(limit)
        .with_taps("fc".into())
        .with_probe_limit(256)
        .with_sample_at(SampleAt::None)
        .validate()?;
    let run = RunDir::new(out.join(backend.name()));
    let options = RunOptions { resume: false };
    let summary = cnnu_train::train(&config, backend, data, "mnist", &run, options, &mut ())?;
    let last = summary.metrics.last().context("no epoch")?;
    Ok((
        last.train_seconds,
        last.images_per_second.unwrap_or(0.0),
        last.test_accuracy,
    ))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::tempdir()?;
    let weights = scratch.path().join("resnet34.safetensors");
    let tensors: Vec<NamedTensor> = formula::state_dict(&state_dict_keys(&args.fixture)?)
        .into_iter()
        .map(|(name, (shape, values))| NamedTensor {
            name,
            shape,
            values,
        })
        .collect();
    tensor_file::write_f32(&weights, &tensors, None)?;
    let data = ImageDataset::read(DatasetKind::Mnist, &args.mnist)?;
    let mut rows = Vec::new();
    for &backend in &args.backends {
        eprintln!("gpu_check: {backend}: parity, then one epoch");
        let start = Instant::now();
        let (worst_parity, worst_tap) = parity(backend, &args.fixture, &weights)?;
        let parity_seconds = start.elapsed().as_secs_f64();
        let (epoch_seconds, images_per_second, test_accuracy) = if args.parity_only {
            (0.0, 0.0, 0.0)
        } else {
            epoch(backend, &data, scratch.path(), args.train_limit)?
        };
        rows.push(Row {
            backend,
            worst_parity,
            worst_tap,
            parity_seconds,
            epoch_seconds,
            images_per_second,
            test_accuracy,
        });
    }
    println!(
        "{:<8} {:>12} {:<22} {:>10} {:>10} {:>9} {:>9}",
        "backend", "worst parity", "at tap", "parity s", "epoch s", "img/s", "test acc"
    );
    for r in &rows {
        println!(
            "{:<8} {:>12.2e} {:<22} {:>10.1} {:>10.1} {:>9.0} {:>9.4}",
            r.backend.name(),
            r.worst_parity,
            r.worst_tap,
            r.parity_seconds,
            r.epoch_seconds,
            r.images_per_second,
            r.test_accuracy
        );
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.worst_parity > 1e-4)
        .map(|r| r.backend.name())
        .collect();
    if !failed.is_empty() {
        bail!(
            "parity above 1e-4 of a tap's scale on {}",
            failed.join(", ")
        );
    }
    Ok(())
}
