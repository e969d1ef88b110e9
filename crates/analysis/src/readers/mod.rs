//! Everything that reads files: cnnu snapshots (safetensors) and MATLAB v5 `.mat` files.

pub mod mat;
pub mod source;
