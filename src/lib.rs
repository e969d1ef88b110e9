//! cnnu ("CNN understanding"): how a CNN's internal representations change while it learns.
//!
//! This crate ties the members together: [`kernels`] (the CPU convolution and optimizer Burn
//! lacks), [`model`] (ResNet-18/34 with named taps), [`train`]
//! (datasets, training, sampling) and [`analysis`] (reduce, cluster, purity, aggregate,
//! compare, report); it holds the study as a library call ([`study::run`]) and the command line
//! shared by the `cnnu` binary and the examples ([`cli`] for the arguments, [`commands`] for
//! the work).

pub mod cli;
pub mod commands;
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
