//! Our tap name for a key of the `resnet18_parity` fixture, shared with the root crate's GPU
//! tier through `#[path]`.

/// PyTorch hooks on a block's shared ReLU fire twice: the fixture's `layer1.0.relu` is the
/// last call (our `layer1.0.relu_1`) and `layer1.0.relu#0` the first (our `layer1.0.relu`,
/// torchvision FX's name for it).
pub fn our_name(key: &str) -> String {
    if let Some(first) = key.strip_suffix("#0") {
        first.to_string()
    } else if key.starts_with("layer") && key.ends_with(".relu") {
        format!("{key}_1")
    } else {
        key.to_string()
    }
}
