//! The code behind each `cnnu` subcommand: arguments in (the types of `cli.rs`), work done
//! through the library, results printed (progress through `console.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use cnnu_analysis::reporting::summary::{RunAnalysis, analyze_dir};
use cnnu_model::{BackendKind, ResNetConfig};
use cnnu_train::tensor_file::{self, NamedTensor};
use cnnu_train::trainer::read_run_config;
use cnnu_train::{ImageDataset, RunDir, RunSummary};

use cnnu::training::{TrainRequest, train_run};

use crate::cli::{
    AggregateArgs, AnalyzeArgs, Cli, Command, CompareArgs, ExportArgs, HsicArg, ModelArg,
    ProbeArgs, ReduceArgs, SimilarityArgs, StudyArgs, TrainCommand, compare_flag_error, flag_error,
    study_error, train_error,
};
use crate::console::{Console, run_line};

/// `cnnu export`: a checkpoint's model as torchvision weights.
fn export(args: &ExportArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let (epoch, model) = cnnu_train::trainer::load_epoch_model(&run, args.epoch)?;
    let tmp = cnnu_run::atomic::temp_path(&args.out);
    model.save_torchvision(&tmp)?;
    cnnu_run::atomic::commit(&tmp, &args.out)
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    eprintln!(
        "cnnu export: {} epoch {epoch} -> {}",
        run.root().display(),
        args.out.display()
    );
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layers { size, model } => layers(size, model),
        Command::Backends => backends(),
        Command::Probe(args) => probe(cli.backend.as_deref(), args),
        Command::Train(args) => train(cli.backend.as_deref(), &args).map(|_| ()),
        Command::Reduce(args) => reduce(&args),
        Command::Analyze(args) => analyze(&args).map(|_| ()),
        Command::Aggregate(args) => aggregate(&args),
        Command::Compare(args) => compare(&args),
        Command::Similarity(args) => similarity(&args),
        Command::Study(args) => study(cli.backend.as_deref(), &args),
        Command::Export(args) => export(&args),
    }
}

fn layers(size: usize, model: ModelArg) -> Result<()> {
    if size == 0 {
        bail!("--size must be at least 1");
    }
    let config = ResNetConfig::new().with_arch(model.arch());
    let catalogue = config.arch.catalogue();
    let width = catalogue
        .taps()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for tap in catalogue.taps() {
        let mut shape = vec![1];
        shape.extend(tap.sample_shape(config.in_channels, config.num_classes, [size, size]));
        println!("{:<width$}  {:?}", tap.name, shape);
    }
    Ok(())
}

fn backends() -> Result<()> {
    for kind in BackendKind::ALL {
        if !kind.is_compiled() {
            println!(
                "{:<8} not compiled in (enable the `{}` feature)",
                kind.name(),
                kind.name()
            );
            continue;
        }
        // Opening a GPU device can panic inside the driver's set-up when there is none.
        match std::panic::catch_unwind(|| kind.device().map(|d| cnnu_model::backend::describe(&d)))
        {
            Ok(Ok(device)) => println!("{:<8} {device}", kind.name()),
            Ok(Err(e)) => println!("{:<8} {e}", kind.name()),
            Err(_) => println!("{:<8} compiled in, but no device found", kind.name()),
        }
    }
    Ok(())
}

fn probe(backend: Option<&str>, args: ProbeArgs) -> Result<()> {
    let kind = BackendKind::resolve(backend)?;
    let device = kind.device()?;
    let config = ResNetConfig::of_torchvision_file(&args.weights)?;
    if let Some(model) = args.model
        && model.arch() != config.arch
    {
        bail!(
            "--model {} but {} holds {} weights",
            model.arch().name(),
            args.weights.display(),
            config.arch.name()
        );
    }
    let catalogue = config.arch.catalogue();
    let taps = catalogue.parse(&args.taps).context("--taps")?;
    let (shape, input) = tensor_file::read_f32(&args.input, &args.input_key)?;
    let model = config.init(&device)?.load_torchvision(&args.weights)?;
    let (_, outputs) =
        cnnu_train::probe(&model, &input, &shape, &taps, args.batch_size, &device)
            .with_context(|| format!("{}: tensor `{}`", args.input.display(), args.input_key))?;
    let metadata = HashMap::from([
        ("taps".to_string(), catalogue.spec(&taps)),
        ("model".to_string(), config.arch.name().to_string()),
        ("weights".to_string(), args.weights.display().to_string()),
        ("backend".to_string(), kind.name().to_string()),
        (
            "cnnu_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    let n_taps = outputs.len();
    let outputs: Vec<NamedTensor> = outputs;
    tensor_file::write_f32(&args.out, &outputs, Some(metadata))?;
    eprintln!(
        "wrote {n_taps} taps for {} images to {}",
        shape[0],
        args.out.display()
    );
    Ok(())
}

/// `cnnu train`: a fresh run into `--out`, or `--resume` of an existing one.
pub fn train(backend: Option<&str>, cmd: &TrainCommand) -> Result<(RunDir, RunSummary)> {
    let args = &cmd.train;
    // A bare --resume on a run killed before its config.json was written has nothing to
    // resume: it starts the run the other options describe.
    let resume_dir = match args.resume.as_deref() {
        Some("") => {
            let out = args
                .out
                .clone()
                .context("a bare --resume needs --out RUN")?;
            RunDir::new(&out).config_path().is_file().then_some(out)
        }
        Some(dir) => Some(PathBuf::from(dir)),
        None => None,
    };
    let request = match resume_dir {
        Some(dir) => {
            let run = RunDir::new(dir);
            let saved = read_run_config(&run)?;
            let mut config = saved.train;
            if let Some(epochs) = args.epochs {
                config.epochs = epochs;
            }
            let backend = match backend {
                Some(_) => BackendKind::resolve(backend)?,
                None => saved.backend.ensure_compiled()?,
            };
            TrainRequest {
                config: config.validate().map_err(flag_error)?,
                backend,
                run,
                resume: true,
            }
        }
        None => TrainRequest {
            config: cmd.to_config().validate().map_err(flag_error)?,
            backend: BackendKind::resolve(backend)?,
            run: RunDir::new(args.out.clone().context("--out RUN is required")?),
            resume: false,
        },
    };
    let c = request.config.config();
    let mut console = Console::new();
    let (dataset, source) = ImageDataset::load(c.dataset, args.data_dir.as_deref(), &mut |url| {
        eprintln!("downloading {url}")
    })?;
    let source = source.to_string();
    eprintln!("{}", run_line(&request, &source));
    let summary = train_run(&request, &dataset, &source, &mut console).map_err(train_error)?;
    Ok((request.run, summary))
}

/// `cnnu reduce`: one layer of one file.
pub fn reduce(args: &ReduceArgs) -> Result<()> {
    let params = args.analysis.params(args.method)?;
    let started = std::time::Instant::now();
    let acts =
        cnnu_analysis::readers::source::load(&args.file, &args.layer, &args.analysis.labels_var)?;
    let report =
        cnnu_analysis::reporting::layer::analyze(&acts, &params, started.elapsed().as_secs_f64())?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let json = serde_json::to_vec_pretty(&report).context("report serialises")?;
        let path = dir.join("report.json");
        std::fs::write(&path, json).with_context(|| format!("{}: cannot write", path.display()))?;
        if let Some(e) = &report.embedding {
            let labels: Vec<i64> = e.indices.iter().map(|&i| report.labels[i]).collect();
            let clusters: Vec<i64> = e
                .indices
                .iter()
                .map(|&i| report.cluster_labels[i])
                .collect();
            let title = format!(
                "{} · {}{}",
                args.file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                report.layer,
                report
                    .epoch
                    .map_or(String::new(), |e| format!(" · epoch {e}"))
            );
            cnnu_analysis::reporting::plot::scatter(
                &dir.join("tsne-labels.png"),
                &format!("{title} · by label"),
                &e.coords,
                &labels,
                cnnu_analysis::reporting::plot::Legend::Classes(report.class_names.as_deref()),
            )?;
            cnnu_analysis::reporting::plot::scatter(
                &dir.join("tsne-clusters.png"),
                &format!("{title} · by cluster"),
                &e.coords,
                &clusters,
                cnnu_analysis::reporting::plot::Legend::Clusters,
            )?;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("report serialises")?
        );
    } else {
        println!("{}", report.summary_text());
    }
    Ok(())
}

/// `cnnu analyze`: every (sample, layer) of a run or of a folder of activation files.
pub fn analyze(args: &AnalyzeArgs) -> Result<RunAnalysis> {
    let params = args.analysis.params(args.method)?;
    let analysis = analyze_dir(
        &args.run,
        args.out.as_deref(),
        args.layers.as_deref(),
        &params,
        args.jobs,
        &args.analysis.labels_var,
        &|p| eprintln!("{}", p.line()),
    )?;
    eprintln!(
        "analysed {} (sample, layer) pairs; summary in {}",
        analysis.reports.len(),
        analysis.dir.join("summary.csv").display()
    );
    Ok(analysis)
}

/// `cnnu aggregate`: analysed runs of one setup summarised into `--out`.
fn aggregate(args: &AggregateArgs) -> Result<()> {
    // Runs of one setup share a network: the first run's model says which layers are early.
    // Folders of activations from elsewhere name no network: no layer is called early.
    let early = match args.runs.first() {
        Some(run) if cnnu_analysis::reporting::summary::is_run(run) => {
            let model = read_run_config(&RunDir::new(run))?.train.model;
            cnnu::study::early_layers(&model.arch.catalogue())
        }
        _ => Default::default(),
    };
    let agg = cnnu_analysis::reporting::aggregate::aggregate(&args.runs, &early)?;
    cnnu_analysis::reporting::aggregate::write_aggregate(&args.out, &agg)?;
    println!("{}", cnnu_analysis::reporting::aggregate::answer(&agg));
    eprintln!(
        "aggregated {} runs ({} rows); {}",
        agg.runs.len(),
        agg.rows.len(),
        args.out.join("aggregate.csv").display()
    );
    Ok(())
}

/// `cnnu compare`: two runs' representations, CKA against its permutation null.
fn compare(args: &CompareArgs) -> Result<()> {
    use cnnu_analysis::reporting::compare::{self, CompareParams};
    let params = CompareParams {
        permutations: args.permutations,
        seed: args.seed,
        layers: args.layers.clone(),
        hsic: match args.hsic {
            HsicArg::Biased => cnnu_analysis::numerics::dynamics::Hsic::Biased,
            HsicArg::Unbiased => cnnu_analysis::numerics::dynamics::Hsic::Unbiased,
        },
    }
    .check()
    .map_err(compare_flag_error)?;
    let c = compare::compare_runs(&args.run_a, &args.run_b, &params)?;
    compare::write_compare(&args.out, &c)?;
    for r in &c.rows {
        println!(
            "{:<10} {:<14} cka {:.4}  null mean {:.4}  p95 {:.4}  p {:.3}",
            r.layer,
            r.sample,
            r.test.cka,
            r.test.cka_null_mean,
            r.test.cka_null_p95,
            r.test.p_value
        );
    }
    let identified = (c.layer_identification * c.layers.len() as f64).round();
    println!(
        "layer identification at {}: {:.3} ({identified:.0} of {} layers' most CKA-similar layer in B is the same layer)",
        c.matrix_sample,
        c.layer_identification,
        c.layers.len()
    );
    eprintln!("compare: {}", args.out.join("compare.csv").display());
    Ok(())
}

/// `cnnu similarity`: CKA of two activation files, in words or as one JSON object.
fn similarity(args: &SimilarityArgs) -> Result<()> {
    use cnnu_analysis::readers::array::{ArrayError, read_matrix};
    use cnnu_analysis::reporting::similarity::{SimilarityParams, compare_arrays};
    let params = SimilarityParams {
        rbf_sigma: args.rbf_sigma,
        permutations: args.permutations,
        seed: args.seed,
    }
    .check()
    .map_err(|e| anyhow::anyhow!("--{e}"))?;
    // Each file's reading errors in the words of its own option.
    let read = |path: &std::path::Path, key: Option<&str>, flag: &str| {
        read_matrix(path, key).map_err(|e| match e {
            ArrayError::AmbiguousTensor { .. } => anyhow::anyhow!("{e} with {flag}"),
            ArrayError::KeyForNpy { path, key } => anyhow::anyhow!(
                "{flag} {key}: {} is a .npy file, which holds one unnamed array",
                path.display()
            ),
            e => e.into(),
        })
    };
    let a = read(&args.a, args.a_key.as_deref(), "--a-key")?;
    let b = read(&args.b, args.b_key.as_deref(), "--b-key")?;
    let s = compare_arrays(&args.a, &a, &args.b, &b, &params)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&s).context("result serialises")?
        );
    } else {
        println!("{}", s.summary_text());
    }
    Ok(())
}

/// `cnnu study`: prints the summary table and where the report is.
pub fn study(backend: Option<&str>, args: &StudyArgs) -> Result<()> {
    let plan = args.plan(backend)?;
    let outcome = cnnu::study::run(&plan, &mut Console::new()).map_err(study_error)?;
    println!("{}", outcome.table);
    println!("report: {}", outcome.report.html.display());
    println!("        {}", outcome.report.md.display());
    Ok(())
}
