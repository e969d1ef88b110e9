//! Training runs on a small slice of real MNIST: what a run directory holds, reproducibility
//! with one seed, and a resumed run ending exactly where an uninterrupted one does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnnu_model::BackendKind;
use cnnu_train::{EpochMetrics, Mnist, RunDir, RunOptions, TrainConfig, TrainError, train};
use safetensors::SafeTensors;

fn mnist() -> Mnist {
    let shared = std::env::var("CNNU_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    Mnist::read(&shared.join("data/mnist")).unwrap()
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
    mnist: &Mnist,
    resume: bool,
) -> Result<Vec<EpochMetrics>, TrainError> {
    let backend = BackendKind::default_compiled().unwrap();
    let options = RunOptions {
        resume,
        progress: false,
    };
    let summary = train(
        &config.validate().unwrap(),
        backend,
        mnist,
        "test",
        &RunDir::new(dir),
        options,
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
