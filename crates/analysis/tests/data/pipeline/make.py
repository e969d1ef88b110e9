"""Builds blobs.mat and prints the reference figures of the seed's pipeline on it, computed with
numpy (full float64 SVD, as the original scripts) and scikit-learn. The numbers are written into
crates/analysis/tests/pipeline.rs; rerun this to regenerate both."""
import numpy as np, scipy.io
from sklearn.cluster import HDBSCAN
from sklearn import metrics

rng = np.random.default_rng(7)
n_per, d = 100, 60
centres = rng.normal(0, 1.3, size=(3, d))
X = np.concatenate([centres[c] + rng.normal(0, 1, size=(n_per, d)) for c in range(3)]).astype(np.float32)
X[:, :5] = 0.0                      # dead features, removed by the filter
X = np.maximum(X, 0)                # ReLU-like
y = np.repeat(np.arange(3), n_per).astype(np.int64)
scipy.io.savemat("blobs.mat", {"acts": X, "labels": y}, do_compression=True)

keep = np.abs(X[y == 0]).mean(0) > 1e-3
Xk = X[:, keep].astype(np.float64)
Xc = Xk - Xk.mean(0)
U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
e = np.cumsum(s**2) / np.sum(s**2)
k = int(np.argmax(e > 0.9)) + 1
scores = U[:, :k] * s[:k]
lab = HDBSCAN(min_cluster_size=20).fit_predict(scores)
print("d_kept", keep.sum(), "k", k, "energy_at_k", repr(e[k - 1]))
print("s[:5]", [repr(v) for v in s[:5]])
print("n_clusters", len(set(lab) - {-1}), "noise", (lab == -1).sum())
h, c, v = metrics.homogeneity_completeness_v_measure(y, lab)
print("homogeneity", repr(h), "completeness", repr(c), "v", repr(v))
print("ari", repr(metrics.adjusted_rand_score(y, lab)), "nmi", repr(metrics.normalized_mutual_info_score(y, lab)))
print("silhouette_true", repr(metrics.silhouette_score(scores, y)))
# scikit-learn's cluster per sample, for the test's ARI check ('.' = noise).
open("sklearn_labels.txt", "w").write("".join("." if c < 0 else str(c) for c in lab) + "\n")
