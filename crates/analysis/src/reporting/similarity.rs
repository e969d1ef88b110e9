//! Two activation matrices of the same samples compared (`cnnu similarity A B`): linear CKA,
//! debiased CKA and RBF CKA in f64 ([`kernel_cka`], the conventions of Kornblith et al.'s
//! reference demo), and the p-value of the linear CKA under the permutation null of
//! [`compare`](crate::reporting::compare) (B's rows shuffled, seeded; same draws as
//! `cnnu compare`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::numerics::dynamics::{DEFAULT_RBF_THRESHOLD, DynamicsError, Hsic, kernel_cka};
use crate::numerics::matrix::MatrixError;
use crate::readers::array::{ArrayError, FloatArray, read_matrix};
use crate::reporting::compare::{
    CompareParams, CompareParamsError, DEFAULT_PERMUTATIONS, ValidCompareParams, cka_test,
};

/// Settings of a comparison, as given; [`check`](SimilarityParams::check) validates them once.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityParams {
    /// σ of the RBF kernel as a multiple of the median pairwise distance (σ² = this² · the
    /// median squared distance).
    pub rbf_sigma: f64,
    /// Permutations of the null (at least [`compare::MIN_PERMUTATIONS`](crate::reporting::compare::MIN_PERMUTATIONS)).
    pub permutations: usize,
    /// Seed of the permutations.
    pub seed: u64,
}

impl Default for SimilarityParams {
    fn default() -> Self {
        Self {
            rbf_sigma: DEFAULT_RBF_THRESHOLD,
            permutations: DEFAULT_PERMUTATIONS,
            seed: 0,
        }
    }
}

/// Why similarity settings are invalid; the fields are named as in [`SimilarityParams`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimilarityParamsError {
    /// σ must be a positive multiple of the median distance.
    #[error("rbf-sigma must be positive and finite, got {0}")]
    RbfSigma(f64),
    /// Too few permutations.
    #[error(transparent)]
    Permutations(#[from] CompareParamsError),
}

/// Checked [`SimilarityParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSimilarityParams {
    rbf_sigma: f64,
    null: ValidCompareParams,
}

impl SimilarityParams {
    /// Validates the settings.
    pub fn check(self) -> Result<ValidSimilarityParams, SimilarityParamsError> {
        if !(self.rbf_sigma > 0.0 && self.rbf_sigma.is_finite()) {
            return Err(SimilarityParamsError::RbfSigma(self.rbf_sigma));
        }
        let null = CompareParams {
            permutations: self.permutations,
            seed: self.seed,
            layers: None,
            // The p-value ranks linear CKA (biased), as the docs say.
            hsic: Hsic::Biased,
        }
        .check()?;
        Ok(ValidSimilarityParams {
            rbf_sigma: self.rbf_sigma,
            null,
        })
    }
}

/// One side of the comparison: a file and, for safetensors, the tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The `.npy` or `.safetensors` file.
    pub path: PathBuf,
    /// The tensor's name; none: a `.npy` file's array or the only float tensor.
    pub key: Option<String>,
}

/// What `cnnu similarity` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Similarity {
    /// Linear CKA (biased HSIC).
    pub linear_cka: f64,
    /// Linear CKA with the unbiased HSIC of Song et al. (2012).
    pub debiased_cka: f64,
    /// RBF CKA (biased HSIC), σ² = `rbf_sigma`² · median squared distance.
    pub rbf_cka: f64,
    /// Samples (rows) of both.
    pub n: usize,
    /// `(1 + #{null ≥ linear CKA}) / (1 + permutations)`, the null being linear CKA with B's
    /// rows permuted.
    pub p_value: f64,
    /// The RBF threshold used.
    pub rbf_sigma: f64,
    /// Permutations of the null.
    pub permutations: usize,
    /// Their seed.
    pub seed: u64,
    /// What was read as A.
    pub a: Side,
    /// What was read as B.
    pub b: Side,
}

/// One side as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// The file.
    pub path: PathBuf,
    /// The tensor (none for a `.npy` file).
    pub tensor: Option<String>,
    /// Its shape in the file.
    pub shape: Vec<usize>,
    /// Its dtype.
    pub dtype: &'static str,
    /// Features per sample (the shape after N, multiplied out).
    pub features: usize,
}

/// Why two arrays could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum SimilarityError {
    /// An array could not be read.
    #[error(transparent)]
    Array(#[from] ArrayError),
    /// The two arrays have different numbers of samples.
    #[error(
        "{}: {n_b} samples, but {} has {n_a}; both must hold the same samples (rows)",
        b.display(),
        a.display()
    )]
    SampleMismatch {
        /// A's file.
        a: PathBuf,
        /// A's samples.
        n_a: usize,
        /// B's file.
        b: PathBuf,
        /// B's samples.
        n_b: usize,
    },
    /// A measure is undefined on these data (a constant array, fewer than 4 samples, …).
    #[error("{} vs {}: {source}", a.display(), b.display())]
    Measure {
        /// A's file.
        a: PathBuf,
        /// B's file.
        b: PathBuf,
        /// Why.
        #[source]
        source: DynamicsError,
    },
    /// Values beyond f32's range, which the permutation null needs.
    #[error("{}: {source} when rounded to float32 for the permutation null", path.display())]
    Narrowing {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: MatrixError,
    },
}

/// Reads A and B and compares them.
pub fn similarity(
    a: &Input,
    b: &Input,
    params: &ValidSimilarityParams,
) -> Result<Similarity, SimilarityError> {
    let fa = read_matrix(&a.path, a.key.as_deref())?;
    let fb = read_matrix(&b.path, b.key.as_deref())?;
    compare_arrays(&a.path, &fa, &b.path, &fb, params)
}

/// [`similarity`] on arrays already read.
pub fn compare_arrays(
    path_a: &Path,
    fa: &FloatArray,
    path_b: &Path,
    fb: &FloatArray,
    params: &ValidSimilarityParams,
) -> Result<Similarity, SimilarityError> {
    let (xa, xb) = (&fa.matrix, &fb.matrix);
    if xa.n() != xb.n() {
        return Err(SimilarityError::SampleMismatch {
            a: path_a.to_path_buf(),
            n_a: xa.n(),
            b: path_b.to_path_buf(),
            n_b: xb.n(),
        });
    }
    let measure = |source| SimilarityError::Measure {
        a: path_a.to_path_buf(),
        b: path_b.to_path_buf(),
        source,
    };
    let values = kernel_cka(xa, xb, params.rbf_sigma).map_err(measure)?;
    // The null is the crate's one permutation test, on f32 copies: its p-value ranks the
    // observed value among CKAs computed the same way, so the rounding cancels out.
    let narrow = |m: &crate::numerics::matrix::Matrix64, path: &Path| {
        m.to_f32().map_err(|source| SimilarityError::Narrowing {
            path: path.to_path_buf(),
            source,
        })
    };
    let (sa, sb) = (narrow(xa, path_a)?, narrow(xb, path_b)?);
    let test = cka_test(
        sa.as_slice(),
        sb.as_slice(),
        xa.n(),
        xa.d(),
        xb.d(),
        &params.null,
    )
    .map_err(measure)?;
    let side = |path: &Path, f: &FloatArray| Side {
        path: path.to_path_buf(),
        tensor: f.name.clone(),
        shape: f.shape.clone(),
        dtype: f.dtype,
        features: f.matrix.d(),
    };
    let p = params.null.params();
    Ok(Similarity {
        linear_cka: values.linear,
        debiased_cka: values.debiased,
        rbf_cka: values.rbf,
        n: xa.n(),
        p_value: test.p_value,
        rbf_sigma: params.rbf_sigma,
        permutations: p.permutations,
        seed: p.seed,
        a: side(path_a, fa),
        b: side(path_b, fb),
    })
}

impl Similarity {
    /// The human-readable summary `cnnu similarity` prints.
    pub fn summary_text(&self) -> String {
        let side = |s: &Side| {
            let tensor = s
                .tensor
                .as_ref()
                .map_or(String::new(), |t| format!(" `{t}`"));
            format!("{}{tensor} {:?} {}", s.path.display(), s.shape, s.dtype)
        };
        format!(
            "A: {}\nB: {}\nn = {} samples; A has {} features, B {}\n\
             linear CKA    {:.6}\n\
             debiased CKA  {:.6}  (unbiased HSIC, Song et al. 2012)\n\
             RBF CKA       {:.6}  (sigma = {} x the median distance)\n\
             p-value       {:.4}  (linear CKA against {} permutations of B's rows, seed {})",
            side(&self.a),
            side(&self.b),
            self.n,
            self.a.features,
            self.b.features,
            self.linear_cka,
            self.debiased_cka,
            self.rbf_cka,
            self.rbf_sigma,
            self.p_value,
            self.permutations,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Input {
        Input {
            path: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/data/kornblith")
                .join(name),
            key: None,
        }
    }

    #[test]
    fn the_demo_from_npy_with_its_null() {
        let params = SimilarityParams::default().check().expect("valid");
        let s = similarity(&fixture("x.npy"), &fixture("y.npy"), &params).expect("similarity");
        assert_eq!(s.n, 100);
        assert!((s.linear_cka - 0.55761).abs() < 5e-6, "{s:?}");
        assert!((s.debiased_cka - 0.51346).abs() < 5e-6, "{s:?}");
        assert!((s.rbf_cka - 0.65483).abs() < 5e-6, "{s:?}");
        // Y = noise + X: no permutation comes near, so the p-value is the smallest possible.
        assert_eq!(s.p_value, 1.0 / 200.0);
        let text = s.summary_text();
        assert!(text.contains("linear CKA    0.557613"), "{text}");
        assert!(text.contains("p-value       0.0050"), "{text}");
    }

    #[test]
    fn params_and_sample_counts_are_checked() {
        let bad = |rbf_sigma, permutations| {
            SimilarityParams {
                rbf_sigma,
                permutations,
                seed: 0,
            }
            .check()
            .expect_err("invalid")
            .to_string()
        };
        assert_eq!(
            bad(0.0, 199),
            "rbf-sigma must be positive and finite, got 0"
        );
        assert_eq!(
            bad(f64::NAN, 199),
            "rbf-sigma must be positive and finite, got NaN"
        );
        assert_eq!(bad(0.5, 10), "permutations 10: at least 99 are needed");
        let params = SimilarityParams::default().check().expect("valid");
        let x = read_matrix(&fixture("x.npy").path, None).expect("x");
        let mut short = x.clone();
        short.matrix =
            crate::numerics::matrix::Matrix64::new(x.matrix.as_slice()[..500].to_vec(), 50, 10)
                .expect("50 rows");
        let e = compare_arrays(Path::new("x.npy"), &x, Path::new("s.npy"), &short, &params)
            .expect_err("50 vs 100");
        assert_eq!(
            e.to_string(),
            "s.npy: 50 samples, but x.npy has 100; both must hold the same samples (rows)"
        );
    }
}
