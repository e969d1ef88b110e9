//! Everything that reads files: cnnu snapshots (safetensors), MATLAB v5 `.mat` files, numpy's
//! `.npy` files and `.npz` archives, and single float arrays from either `.npy` or safetensors.

pub mod array;
pub mod foreign;
pub mod mat;
pub mod npy;
pub mod npz;
pub mod source;
