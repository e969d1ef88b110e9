//! A run killed with SIGKILL at arbitrary moments loses no completed epoch, never leaves a
//! half-written snapshot under its final name, and once resumed ends with exactly the
//! snapshots of an uninterrupted run, also when the kill lands in the middle of a snapshot
//! write or a checkpoint write, or inside an epoch after one of its step samples.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

fn mnist_dir() -> PathBuf {
    cnnu_fixtures::mnist_small()
}

fn train(out: &Path, resume: bool) -> Child {
    let mnist = mnist_dir();
    let mut args = vec![
        "train",
        "--data-dir",
        mnist.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--train-limit",
        "160",
        "--test-limit",
        "64",
        "--probe-limit",
        "48",
        "--eval-batch-size",
        "16",
        "--taps",
        "conv1,layer2",
        "--seed",
        "3",
        // 5 steps per epoch: 2, 3 inside epoch 1, 7 inside epoch 2, 5 is epoch 1's end.
        "--sample-at",
        "2,3,5,7",
        "--out",
        out.to_str().unwrap(),
    ];
    if resume {
        args.push("--resume");
    }
    Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cnnu starts")
}

/// Metrics lines without their timing fields.
fn learning_lines(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l).expect("every metrics line is whole");
            for k in [
                "images_per_second",
                "train_seconds",
                "eval_seconds",
                "test_images_per_second",
            ] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

/// What must hold at any moment: only complete snapshots carry a final name, and every
/// epoch in metrics.jsonl has its snapshot.
fn check_invariants(run: &Path) {
    let snapshots = run.join("snapshots");
    for entry in std::fs::read_dir(&snapshots).into_iter().flatten() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            (name.starts_with("epoch-") || name.starts_with("step-"))
                && name.ends_with(".safetensors"),
            "stray file {name}"
        );
        let bytes = std::fs::read(entry.path()).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{name} is not a complete snapshot: {e}"));
        assert_eq!(st.tensor("layer2").unwrap().shape(), &[48, 128, 4, 4]);
    }
    for line in learning_lines(run) {
        let epoch = line["epoch"].as_u64().unwrap();
        assert!(
            snapshots
                .join(format!("epoch-{epoch:03}.safetensors"))
                .is_file(),
            "epoch {epoch} lost"
        );
    }
}

#[test]
fn sigkill_at_any_moment_then_resume_gives_the_uninterrupted_run() {
    let root = tempfile::tempdir().unwrap();
    let (reference, killed) = (root.path().join("reference"), root.path().join("killed"));
    assert!(train(&reference, false).wait().unwrap().success());

    let mut kills = 0;
    let mut finished = false;
    for attempt in 0..8 {
        let mut child = train(&killed, attempt > 0);
        let delay = Duration::from_millis(250 + 450 * attempt as u64);
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "attempt {attempt} failed");
                finished = true;
            }
            None => {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
                kills += 1;
            }
        }
        check_invariants(&killed);
        if finished {
            break;
        }
    }
    if !finished {
        assert!(train(&killed, true).wait().unwrap().success());
    }
    assert!(kills >= 2, "the test killed the run only {kills} times");
    check_invariants(&killed);
    assert_eq!(learning_lines(&killed), learning_lines(&reference));
    same_snapshots(&reference, &killed);
}

/// The snapshots the uninterrupted run has: epochs 0..=2 and the steps inside them.
const SNAPSHOTS: [&str; 6] = [
    "epoch-000",
    "step-0000002",
    "step-0000003",
    "epoch-001",
    "step-0000007",
    "epoch-002",
];

/// Both runs hold exactly [`SNAPSHOTS`], byte for byte equal.
fn same_snapshots(reference: &Path, run: &Path) {
    let names = |dir: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let mut want: Vec<String> = SNAPSHOTS
        .iter()
        .map(|s| format!("{s}.safetensors"))
        .collect();
    want.sort();
    assert_eq!(names(reference), want);
    assert_eq!(names(run), want);
    for name in &want {
        let a = std::fs::read(reference.join("snapshots").join(name)).unwrap();
        let b = std::fs::read(run.join("snapshots").join(name)).unwrap();
        assert!(a == b, "{name} differs after the kills and resumes");
    }
}

#[test]
fn a_kill_inside_an_epoch_after_a_step_sample_then_resume_gives_the_same_snapshots() {
    let root = tempfile::tempdir().unwrap();
    let (reference, killed) = (root.path().join("reference"), root.path().join("killed"));
    assert!(train(&reference, false).wait().unwrap().success());
    let meta = |name: &str| {
        let bytes = std::fs::read(reference.join("snapshots").join(name)).unwrap();
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = m.metadata().clone().unwrap();
        (m["epoch"].clone(), m["step"].clone())
    };
    assert_eq!(meta("step-0000007.safetensors"), ("1".into(), "7".into()));
    assert_eq!(meta("epoch-002.safetensors"), ("2".into(), "10".into()));
    let mut child = train(&killed, false);
    let step7 = killed.join("snapshots/step-0000007.safetensors");
    let started = std::time::Instant::now();
    while !step7.is_file() && started.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(step7.is_file(), "step 7 was never sampled");
    assert!(
        !killed.join("snapshots/epoch-002.safetensors").exists(),
        "killed inside epoch 2"
    );
    check_invariants(&killed);
    assert!(train(&killed, true).wait().unwrap().success());
    assert_eq!(learning_lines(&killed), learning_lines(&reference));
    same_snapshots(&reference, &killed);
}

/// What a kill is aimed at: the temporary that exists only while that write is under way.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// `partial/.epoch-001.safetensors.PID.tmp`, the snapshot being streamed.
    Snapshot,
    /// `partial/.epoch-001.PID.tmp/`, the checkpoint directory, once `model.bpk` is in it.
    Checkpoint,
}

/// The target's temporary in `partial/`, if it is there now.
fn in_flight(run: &Path, target: Target) -> Option<PathBuf> {
    let entries = std::fs::read_dir(run.join("partial")).ok()?;
    entries.flatten().map(|e| e.path()).find(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        match target {
            Target::Snapshot => name.starts_with(".epoch-001.safetensors.") && p.is_file(),
            Target::Checkpoint => {
                name.starts_with(".epoch-001.")
                    && !name.contains("safetensors")
                    && p.join("model.bpk").is_file()
            }
        }
    })
}

/// Starts a run and SIGKILLs it the moment the target write is seen in progress; returns
/// whether the kill landed while the temporary was still there (the write unfinished).
fn kill_during(run: &Path, target: Target) -> bool {
    let mut child = train(run, false);
    let started = std::time::Instant::now();
    loop {
        if in_flight(run, target).is_some() {
            child.kill().unwrap();
            child.wait().unwrap();
            return in_flight(run, target).is_some();
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn sigkill_during_a_snapshot_write_or_a_checkpoint_write_then_resume_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let reference = root.path().join("reference");
    assert!(train(&reference, false).wait().unwrap().success());
    for target in [Target::Snapshot, Target::Checkpoint] {
        // The poll can lose the race against the final rename; a few tries make that rare.
        let mut landed = None;
        for attempt in 0..5 {
            let run = root.path().join(format!("{target:?}-{attempt}"));
            if kill_during(&run, target) {
                landed = Some(run);
                break;
            }
        }
        let run = landed.unwrap_or_else(|| panic!("never killed mid-write of the {target:?}"));
        check_invariants(&run);
        let done: Vec<u64> = learning_lines(&run)
            .iter()
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(
            done,
            [0],
            "{target:?}: epoch 1 must be incomplete when killed"
        );
        if let Target::Snapshot = target {
            assert!(!run.join("snapshots/epoch-001.safetensors").exists());
        }
        assert!(
            train(&run, true).wait().unwrap().success(),
            "{target:?} resume"
        );
        check_invariants(&run);
        assert!(
            std::fs::read_dir(run.join("partial"))
                .map(|d| d.count() == 0)
                .unwrap_or(true),
            "{target:?}: temporaries left after the resumed run"
        );
        assert_eq!(
            learning_lines(&run),
            learning_lines(&reference),
            "{target:?}"
        );
        same_snapshots(&reference, &run);
    }
}
