//! `cnnu similarity` on Kornblith et al.'s reference demo (`crates/fixtures/data/kornblith`,
//! written by `crates/fixtures/make_kornblith.py`): with numpy's legacy generator,
//! `np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X`, the
//! demo notebook publishes linear CKA 0.55761, debiased CKA 0.51346 and RBF CKA (threshold 0.5)
//! 0.65483. The binary must reproduce them to 5e-5 from `.npy` and from `.safetensors`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const PUBLISHED: [(&str, f64); 3] = [
    ("linear_cka", 0.55761),
    ("debiased_cka", 0.51346),
    ("rbf_cka", 0.65483),
];

fn fixture(name: &str) -> String {
    let p: PathBuf = cnnu_fixtures::repo("kornblith").join(name);
    p.display().to_string()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .arg("similarity")
        .args(args)
        .output()
        .expect("cnnu runs");
    assert!(
        out.status.success(),
        "cnnu similarity {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let text = run(&a);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "one object on one line: {text}"
    );
    serde_json::from_str(text.trim()).expect("--json prints JSON")
}

fn check_published(v: &Value, from: &str) {
    for (key, want) in PUBLISHED {
        let got = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{from}: no number `{key}`: {v}"));
        assert!(
            (got - want).abs() < 5e-5,
            "{from}: {key} = {got}, published {want}"
        );
        eprintln!("{from}: {key} = {got:.10} (published {want})");
    }
    assert_eq!(v["n"].as_u64(), Some(100), "{from}: {v}");
    let p = v["p_value"].as_f64().expect("p_value is a number");
    assert!(p > 0.0 && p <= 1.0, "{from}: p_value {p}");
}

#[test]
fn the_demo_values_from_npy() {
    let v = json(&[&fixture("x.npy"), &fixture("y.npy")]);
    check_published(&v, ".npy");
    // Y = X + noise is far from every permutation of it: the smallest p-value of 199 draws.
    assert_eq!(v["p_value"].as_f64(), Some(0.005));
}

#[test]
fn the_demo_values_from_safetensors() {
    let xy = fixture("xy.safetensors");
    let v = json(&[&xy, &xy, "--a-key", "x", "--b-key", "y"]);
    check_published(&v, ".safetensors");
    // Mixed formats read the same arrays.
    let mixed = json(&[&fixture("x.npy"), &xy, "--b-key", "y"]);
    for (key, _) in PUBLISHED {
        assert_eq!(mixed[key], v[key], "{key}");
    }
}

#[test]
fn json_keys_and_the_options() {
    let x = fixture("x.npy");
    let y = fixture("y.npy");
    let v = json(&[
        &x,
        &y,
        "--permutations",
        "99",
        "--seed",
        "3",
        "--rbf-sigma",
        "1",
    ]);
    for key in ["linear_cka", "debiased_cka", "rbf_cka", "n", "p_value"] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    assert_eq!(v["permutations"].as_u64(), Some(99));
    assert_eq!(v["seed"].as_u64(), Some(3));
    assert_eq!(v["p_value"].as_f64(), Some(0.01));
    // Another σ changes only the RBF value.
    let default = json(&[&x, &y]);
    assert_eq!(v["linear_cka"], default["linear_cka"]);
    assert_ne!(v["rbf_cka"], default["rbf_cka"]);
    // A representation against itself: every CKA is 1.
    let same = json(&[&x, &x]);
    for (key, _) in PUBLISHED {
        let got = same[key].as_f64().expect("number");
        assert!((got - 1.0).abs() < 1e-12, "{key} = {got}");
    }
    // The human-readable summary names the three values.
    let text = run(&[&x, &y]);
    for needle in [
        "linear CKA    0.557613",
        "debiased CKA  0.513456",
        "RBF CKA       0.654831",
        "p-value       0.0050",
        "n = 100 samples",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}
