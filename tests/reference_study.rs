//! cnnu against the original PyTorch + numpy + scikit-learn pipeline: with the reference run's
//! epoch-0 weights (`shared/fixtures/resnet18_parity/weights_epoch0.safetensors`, the same
//! seed-0 network as `shared/reference-study`), sampling the first 2000 test images and running
//! filter → pca → HDBSCAN must give the reference's epoch-0 rows of `science_table.csv`:
//! the same kept features, the same k, the same energy at k, and no clusters.

use cnnu::analysis::numerics::matrix::{Matrix, Representation};
use cnnu::analysis::numerics::pipeline::{AnalysisParams, analyze};
use cnnu::model::{BackendKind, ResNetConfig};
use cnnu::train::{DatasetKind, ImageDataset};

#[test]
fn epoch_zero_reproduces_the_reference_study() {
    let Some(shared) = cnnu_fixtures::shared_dir().filter(|d| d.join("reference-study").is_dir())
    else {
        cnnu_fixtures::shared("reference-study");
        return;
    };
    let table = std::fs::read_to_string(shared.join("reference-study/science_table.csv")).unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r[col("epoch")] == "0")
        .collect();
    assert_eq!(rows.len(), 4, "conv1, relu, layer1, layer2 at epoch 0");

    let device = BackendKind::from_env().unwrap().device().unwrap();
    let model = ResNetConfig::new()
        .init(&device)
        .unwrap()
        .load_torchvision(shared.join("fixtures/resnet18_parity/weights_epoch0.safetensors"))
        .unwrap();
    let mnist = ImageDataset::read(DatasetKind::Mnist, &shared.join("data/mnist")).unwrap();
    let test = &mnist.test;
    let n = 2000;
    let indices: Vec<usize> = (0..n).collect();
    let input = mnist.normalized(test, &indices);
    let labels: Vec<i64> = test.labels[..n].iter().map(|&l| l as i64).collect();
    let taps = model.catalogue().parse("conv1,relu,layer1,layer2").unwrap();
    let (_, outputs) =
        cnnu::train::probe(&model, &input, &[n, 1, 28, 28], &taps, 250, &device).unwrap();
    let params = AnalysisParams::default().check().unwrap();
    for (row, tap) in rows.iter().zip(outputs) {
        assert_eq!(row[col("layer")], tap.name);
        let d = tap.shape[1..].iter().product();
        let features = Matrix::new(tap.values, n, d).unwrap();
        let rep = Representation::new(features, labels.clone()).unwrap();
        let r = analyze(&rep, &params).unwrap();
        let layer = &tap.name;
        let want = |name: &str| row[col(name)].parse::<f64>().unwrap();
        assert_eq!(r.d_total as f64, want("d_total"), "{}", layer);
        assert_eq!(r.d_kept as f64, want("d_kept"), "{}", layer);
        assert_eq!(r.k as f64, want("k"), "{}", layer);
        assert!(
            (r.energy_at_k - want("energy_at_k")).abs() < 2e-6,
            "{}: {} vs {}",
            layer,
            r.energy_at_k,
            want("energy_at_k")
        );
        assert_eq!(
            r.agreement.n_clusters as f64,
            want("n_clusters"),
            "{}",
            layer
        );
        assert!(
            (r.agreement.purity_with_noise - want("purity_with_noise")).abs() < 1e-3,
            "{}",
            layer
        );
    }
}
