//! cnnu ("CNN understanding"): how a CNN's internal representations change while it learns.
//!
//! This crate ties the members together: [`kernels`] (the CPU convolution and optimizer Burn
//! lacks), [`model`] (ResNet-18/34 with named taps), [`train`]
//! (MNIST training and per-epoch sampling) and [`analysis`] (reduce, cluster, purity), and
//! holds the command-line interface shared by the `cnnu` binary and the examples.

pub mod cli;
pub mod study;

pub use cnnu_analysis as analysis;
pub use cnnu_kernels as kernels;
pub use cnnu_model as model;
pub use cnnu_train as train;
