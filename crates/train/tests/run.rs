//! Training runs on a small slice of real MNIST: what a run directory holds, reproducibility
//! with one seed, and a resumed run ending exactly where an uninterrupted one does.

use std::collections::BTreeMap;
use std::path::Path;

use cnnu_model::BackendKind;
use cnnu_train::{
    DatasetKind, EpochMetrics, ImageDataset, RunDir, RunOptions, TrainConfig, TrainError, train,
};
use safetensors::SafeTensors;

fn mnist() -> ImageDataset {
    ImageDataset::read(DatasetKind::Mnist, &cnnu_fixtures::mnist_small()).unwrap()
}

fn config(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(epochs)
        .with_seed(seed)
        .with_batch_size(32)
        .with_train_limit(Some(96))
        .with_test_limit(Some(64))
        .with_probe_limit(24)
        .with_eval_batch_size(16)
        .with_taps("conv1,layer1.0.relu,flatten".into())
}

fn run(
    dir: &Path,
    config: TrainConfig,
    mnist: &ImageDataset,
    resume: bool,
) -> Result<Vec<EpochMetrics>, TrainError> {
    let backend = BackendKind::from_env().unwrap();
    let options = RunOptions { resume };
    let summary = train(
        &config.validate().unwrap(),
        backend,
        mnist,
        "test",
        &RunDir::new(dir),
        options,
        &mut (),
    )?;
    Ok(summary.metrics)
}

fn snapshot(dir: &Path, epoch: usize) -> Vec<u8> {
    std::fs::read(RunDir::new(dir).snapshot_path(epoch)).unwrap()
}

/// An epoch's (epoch, train loss, train accuracy, test loss, test accuracy).
type LearningFigures = (usize, Option<f64>, Option<f64>, f64, f64);

/// Metrics without the wall-clock figures, which legitimately differ between runs.
fn learning_figures(m: &[EpochMetrics]) -> Vec<LearningFigures> {
    m.iter()
        .map(|m| {
            (
                m.epoch,
                m.train_loss,
                m.train_accuracy,
                m.test_loss,
                m.test_accuracy,
            )
        })
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn runs_are_reproducible_and_resume_exactly() {
    let mnist = mnist();
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));

    let full = run(&a, config(2, 7), &mnist, false).unwrap();
    assert_eq!(full.len(), 3, "epoch 0 and two epochs");
    assert!(full[0].train_loss.is_none() && full[1].train_loss.is_some());

    // Same seed, same backend: the same epoch-0 snapshot and epoch-1 figures.
    let first = run(&b, config(1, 7), &mnist, false).unwrap();
    assert!(
        snapshot(&a, 0) == snapshot(&b, 0),
        "epoch 0 snapshots differ"
    );
    assert!(
        snapshot(&a, 1) == snapshot(&b, 1),
        "epoch 1 snapshots differ"
    );
    assert_eq!(learning_figures(&full[..2]), learning_figures(&first));

    // Continuing the one-epoch run to two epochs ends exactly where the full run did.
    let resumed = run(&b, config(2, 7), &mnist, true).unwrap();
    assert_eq!(learning_figures(&full), learning_figures(&resumed));
    assert!(
        snapshot(&a, 2) == snapshot(&b, 2),
        "resumed epoch 2 differs"
    );

    // A different seed gives a different network.
    let c = root.path().join("c");
    run(&c, config(0, 8), &mnist, false).unwrap();
    assert!(
        snapshot(&a, 0) != snapshot(&c, 0),
        "seed 8 gave seed 7's network"
    );

    // Without --resume an existing run is not overwritten.
    let err = run(&a, config(2, 7), &mnist, false).unwrap_err();
    assert!(matches!(err, TrainError::RunExists(_)), "{err}");
}

#[test]
fn a_run_directory_holds_complete_snapshots_metrics_and_checkpoints() {
    let mnist = mnist();
    let root = tempfile::tempdir().unwrap();
    let metrics = run(root.path(), config(1, 0), &mnist, false).unwrap();
    let dir = RunDir::new(root.path());
    assert_eq!(dir.snapshot_epochs(), vec![0, 1]);
    let names: Vec<String> = std::fs::read_dir(dir.snapshots_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "nothing but complete snapshots: {names:?}");
    assert_eq!(std::fs::read_dir(dir.partial_dir()).unwrap().count(), 0);
    for epoch in [0, 1] {
        let ck = dir.checkpoint_dir(epoch);
        assert!(ck.join("model.bpk").is_file() && ck.join("optimizer.bpk").is_file());
    }
    let lines = std::fs::read_to_string(dir.metrics_path()).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.config_path()).unwrap()).unwrap();
    assert_eq!(saved["train"]["probe_limit"], 24);
    assert_eq!(saved["backend"], "flex");

    let bytes = snapshot(root.path(), 1);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: BTreeMap<String, String> = header.metadata().clone().unwrap().into_iter().collect();
    assert_eq!(meta["epoch"], "1");
    assert_eq!(
        meta["test_accuracy"].parse::<f64>().unwrap(),
        metrics[1].test_accuracy
    );
    assert_eq!(meta["taps"], "conv1,layer1.0.relu,flatten");
    for key in [
        "seed",
        "backend",
        "model_config",
        "cnnu_version",
        "test_loss",
    ] {
        assert!(meta.contains_key(key), "{key}");
    }
    assert_eq!(st.tensor("conv1").unwrap().shape(), &[24, 64, 14, 14]);
    assert_eq!(st.tensor("layer1.0.relu").unwrap().shape(), &[24, 64, 7, 7]);
    assert_eq!(st.tensor("flatten").unwrap().shape(), &[24, 512]);
    assert_eq!(st.tensor("logits").unwrap().shape(), &[24, 10]);
    assert_eq!(i64s(&st, "indices"), (0..24).collect::<Vec<i64>>());
    let labels: Vec<i64> = mnist.test.labels[..24].iter().map(|&l| l as i64).collect();
    assert_eq!(i64s(&st, "labels"), labels);
    let logits = f32s(&st, "logits");
    let argmax: Vec<i64> = logits
        .chunks(10)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > row[best] { i } else { best }) as i64
        })
        .collect();
    assert_eq!(i64s(&st, "predictions"), argmax);
    let relu = f32s(&st, "layer1.0.relu");
    assert!(relu.iter().all(|v| *v >= 0.0) && relu.iter().any(|v| *v > 0.0));
}

#[test]
fn a_resnet34_run_samples_all_149_taps() {
    let mnist = mnist();
    let root = tempfile::tempdir().unwrap();
    let config = config(1, 0)
        .with_train_limit(Some(32))
        .with_probe_limit(8)
        .with_taps("all".into())
        .with_model(cnnu_model::ResNetConfig::new().with_arch(cnnu_model::ResNetArch::ResNet34));
    run(root.path(), config, &mnist, false).unwrap();
    let bytes = snapshot(root.path(), 1);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let catalogue = cnnu_model::ResNetArch::ResNet34.catalogue();
    assert_eq!(catalogue.len(), 149);
    for tap in catalogue.taps() {
        let mut shape = vec![8];
        shape.extend(tap.sample_shape(1, 10, [28, 28]));
        assert_eq!(st.tensor(&tap.name).unwrap().shape(), shape, "{}", tap.name);
    }
    // The taps past the 128th: layer4's third block and the head.
    assert_eq!(
        st.tensor("layer4.2.relu_1").unwrap().shape(),
        &[8, 512, 1, 1]
    );
    assert_eq!(st.tensor("fc").unwrap().shape(), &[8, 10]);
}

/// A CIFAR-10 directory in the binary format: five training batches and a test batch of
/// `per_file` records each, with images that differ by class, and `batches.meta.txt`.
fn write_cifar(dir: &Path, per_file: usize) {
    use cnnu_train::cifar::{TEST_FILE, TRAIN_FILES, write_batch};
    for (f, file) in TRAIN_FILES.into_iter().chain([TEST_FILE]).enumerate() {
        let labels: Vec<u8> = (0..per_file).map(|i| ((i + f) % 10) as u8).collect();
        let images: Vec<u8> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| (0..3072).map(move |p| ((p * (l as usize + 1) + i) % 256) as u8))
            .collect();
        write_batch(&dir.join(file), &images, &labels).unwrap();
    }
    let names = "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
}

#[test]
fn a_cifar10_run_trains_a_3_channel_resnet_and_samples_16x16_conv1() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cifar");
    std::fs::create_dir_all(&data).unwrap();
    write_cifar(&data, 20);
    let dataset = ImageDataset::read(DatasetKind::Cifar10, &data).unwrap();
    assert_eq!((dataset.train.len(), dataset.test.len()), (100, 20));
    assert_eq!(dataset.image_dims(), [3, 32, 32]);
    assert_eq!(dataset.class_names[1], "car", "names from batches.meta.txt");
    // The test batch (file 5): record 3 has label (3 + 5) % 10 = 8 and its G plane starts at
    // pixel 1024 = (1024 · 9 + 3) % 256.
    assert_eq!(dataset.test.labels[3], 8);
    assert_eq!(dataset.test.image(3)[1024], ((1024 * 9 + 3) % 256) as u8);

    let settings = config(1, 0)
        .with_train_limit(Some(40))
        .with_probe_limit(12)
        .with_dataset(DatasetKind::Cifar10)
        .with_model(cnnu_model::ResNetConfig::new().with_in_channels(3));
    let run_dir = root.path().join("run");
    run(&run_dir, settings, &dataset, false).unwrap();
    let bytes = snapshot(&run_dir, 1);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("conv1").unwrap().shape(), &[12, 64, 16, 16]);
    assert_eq!(st.tensor("layer1.0.relu").unwrap().shape(), &[12, 64, 8, 8]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["dataset"], "cifar10");
    let names: Vec<String> = serde_json::from_str(&meta["class_names"]).unwrap();
    assert_eq!(names[9], "truck");

    // A 1-channel model cannot take CIFAR-10: a typed error before anything runs.
    let err = config(1, 0)
        .with_dataset(DatasetKind::Cifar10)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("3-channel"), "{err}");
}
