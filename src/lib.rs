//! cnnu ("CNN understanding"): how a CNN's internal representations change while it learns.
//!
//! This crate ties the members together: [`kernels`] (the CPU convolution and optimizer Burn
//! lacks), [`model`] (ResNet-18/34 with named taps), [`train`] (datasets, training, sampling)
//! and [`analysis`] (reduce, cluster, purity, aggregate, compare, report); it holds the study
//! as a library call ([`study::run`]). Nothing here prints: long work reports to a progress
//! trait ([`study::StudyProgress`], [`train::TrainProgress`]) the caller implements. The
//! command line (clap) lives with the `cnnu` binary in `src/bin/cnnu/`.

#![forbid(unsafe_code)]

pub mod study;
pub mod training;

pub use cnnu_analysis as analysis;
pub use cnnu_kernels as kernels;
pub use cnnu_model as model;
pub use cnnu_train as train;

/// The README's Rust examples, compiled as doctests so that the front door cannot drift from
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
