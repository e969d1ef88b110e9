//! Backend choice at run time among those compiled in by Cargo features.
//!
//! Burn 0.22 picks the backend through the `Device` value, so the whole program is
//! backend-agnostic; this module only maps a user-facing name to a device and says which
//! feature to enable when a name is not compiled in.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The environment variable that names the backend when `--backend` is not given.
pub const BACKEND_ENV: &str = "CNNU_BACKEND";

/// A Burn backend cnnu can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (default).
    Flex,
    /// The older ndarray CPU backend (deprecated upstream, much slower here).
    Ndarray,
    /// wgpu with automatic graphics API selection.
    Wgpu,
    /// wgpu pinned to the Vulkan API (through WGSL unless built with `vulkan-spirv`).
    Vulkan,
    /// CUDA.
    Cuda,
}

/// Errors from choosing a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A name that is no backend at all.
    #[error("unknown backend `{0}`; known backends: flex, ndarray, wgpu, vulkan, cuda")]
    Unknown(String),
    /// A binary built with no backend feature at all.
    #[error(
        "this binary was built without any backend; enable one of the features flex, ndarray, wgpu, vulkan, cuda"
    )]
    NoneCompiled,
    /// A real backend that this binary was built without.
    #[error(
        "backend `{name}` is not compiled into this binary; rebuild with `--features {name}` \
         (compiled in: {compiled})"
    )]
    NotCompiled {
        /// The backend asked for (also its Cargo feature).
        name: &'static str,
        /// The backends this binary has.
        compiled: String,
    },
}

impl BackendKind {
    /// Every backend, in the order `cnnu backends` lists them.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Flex,
        BackendKind::Ndarray,
        BackendKind::Wgpu,
        BackendKind::Vulkan,
        BackendKind::Cuda,
    ];

    /// The backend's name, which is also its Cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Vulkan => cfg!(feature = "vulkan"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The compiled-in backends.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The backend used when none is named: the first compiled in (flex in a default build).
    pub fn default_compiled() -> Option<BackendKind> {
        Self::compiled().into_iter().next()
    }

    /// The backend `name` names (checked to be compiled in), or the first compiled in when
    /// `None`.
    pub fn resolve(name: Option<&str>) -> Result<Self, BackendError> {
        match name {
            Some(n) => n.parse::<BackendKind>()?.ensure_compiled(),
            None => Self::default_compiled().ok_or(BackendError::NoneCompiled),
        }
    }

    /// The backend named by the `CNNU_BACKEND` environment variable ([`BACKEND_ENV`]), else
    /// the first compiled in: how `cnnu --backend` and the test suites pick one.
    pub fn from_env() -> Result<Self, BackendError> {
        Self::resolve(std::env::var(BACKEND_ENV).ok().as_deref())
    }

    /// Checks that the backend is compiled in.
    pub fn ensure_compiled(self) -> Result<Self, BackendError> {
        if self.is_compiled() {
            Ok(self)
        } else {
            let compiled: Vec<&str> = Self::compiled().into_iter().map(|b| b.name()).collect();
            Err(BackendError::NotCompiled {
                name: self.name(),
                compiled: compiled.join(", "),
            })
        }
    }

    /// The default device of this backend (no autodiff).
    pub fn device(self) -> Result<Device, BackendError> {
        self.ensure_compiled()?;
        #[allow(unreachable_code)]
        Ok(match self {
            #[cfg(feature = "flex")]
            BackendKind::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            BackendKind::Ndarray => Device::ndarray(),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Device::wgpu(Default::default()),
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => vulkan_device(),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Device::cuda(0),
            #[allow(unreachable_patterns)]
            other => unreachable!("{other} passed ensure_compiled but has no device arm"),
        })
    }
}

/// wgpu pinned to the Vulkan API. Its kernels go through WGSL (naga) unless the `vulkan-spirv`
/// feature asks for cubecl's own SPIR-V compiler, which in cubecl 0.11.3 declares workgroup
/// (shared) memory as a pointer to a pointer: `spirv-val` rejects every kernel that uses it
/// (any matmul), and Mesa's lavapipe segfaults compiling them (docs/backends.md).
#[cfg(feature = "vulkan")]
fn vulkan_device() -> Device {
    #[cfg(feature = "vulkan-spirv")]
    return Device::vulkan(Default::default());
    #[cfg(not(feature = "vulkan-spirv"))]
    Device::new(burn::backend::WgpuDevice::default().on(burn::backend::WgpuBackend::Vulkan))
}

/// What a device is, for `cnnu backends`: on a GPU backend the adapter's own name
/// (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA H100 PCIe`), which opens the device; elsewhere
/// the device's debug form.
pub fn describe(device: &Device) -> String {
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
    if let Some(id) = device.identity() {
        return id.name;
    }
    format!("{device:?}")
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_missing_features_are_named() {
        for b in BackendKind::ALL {
            assert_eq!(b.name().parse::<BackendKind>().unwrap(), b);
        }
        assert!(matches!(
            "tpu".parse::<BackendKind>(),
            Err(BackendError::Unknown(_))
        ));
        for b in BackendKind::ALL.into_iter().filter(|b| !b.is_compiled()) {
            let err = b.device().unwrap_err().to_string();
            assert!(err.contains(&format!("--features {}", b.name())), "{err}");
        }
        assert_eq!(
            BackendKind::default_compiled().is_some(),
            !BackendKind::compiled().is_empty()
        );
    }
}
