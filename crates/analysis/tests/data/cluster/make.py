"""Reference labels for the unit tests in crates/analysis/src/cluster.rs.

The datasets are rebuilt here bit for bit as in the Rust tests (same 64-bit LCG, same f64
arithmetic, one rounding to f32 at the end), clustered with scikit-learn's
HDBSCAN(min_cluster_size=m), and written as one compact label string per dataset:
'-' is noise (-1), '0'..'9' / 'a'..'z' are clusters 0..35.

    pip install scikit-learn numpy
    python3 make.py        # run from this directory; rewrites the *.txt files
"""
import numpy as np
import sklearn
from sklearn.cluster import HDBSCAN

MASK = (1 << 64) - 1


class Lcg:
    """Knuth's MMIX LCG; 24 high bits per draw so every value is exact in f32 and f64."""

    def __init__(self, seed):
        self.state = seed & MASK

    def uniform(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & MASK
        return (self.state >> 40) / float(1 << 24)

    def gauss(self):
        # Irwin-Hall(4) - 2: bell-shaped, variance 1/3, exact in f64.
        return self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0


def blobs():
    """3 blobs (200/150/100 points) in 8-d plus 30 uniform noise points."""
    rng, dim, rows = Lcg(1), 8, []
    for size, c in ((200, 0), (150, 1), (100, 2)):
        for _ in range(size):
            rows.append([(6.0 if j == c else 0.0) + 1.5 * rng.gauss() for j in range(dim)])
    for _ in range(30):
        rows.append([-4.0 + 14.0 * rng.uniform() for _ in range(dim)])
    return np.array(rows, dtype=np.float64).astype(np.float32), 15


def relu_dups():
    """ReLU-like 16-d rows: 2 blobs of 150, 120 exact all-zero rows, 20 noise rows."""
    rng, dim, rows = Lcg(2), 16, []
    for size, c in ((150, 0), (150, 8)):
        for _ in range(size):
            rows.append([max(0.0, (4.0 if c <= j < c + 8 else -1.0) + 2.0 * rng.gauss()) for j in range(dim)])
    rows.extend([[0.0] * dim for _ in range(120)])
    for _ in range(20):
        rows.append([max(0.0, -2.0 + 10.0 * rng.uniform()) for _ in range(dim)])
    return np.array(rows, dtype=np.float64).astype(np.float32), 10


def uniform():
    """300 points uniform in the 4-d unit cube: no density structure at all."""
    rng, dim = Lcg(3), 4
    rows = [[rng.uniform() for _ in range(dim)] for _ in range(300)]
    return np.array(rows, dtype=np.float64).astype(np.float32), 20


def encode(labels):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join("-" if v < 0 else digits[v] for v in labels)


if __name__ == "__main__":
    print(f"scikit-learn {sklearn.__version__}")
    for name, make in (("blobs", blobs), ("relu_dups", relu_dups), ("uniform", uniform)):
        x, m = make()
        labels = HDBSCAN(min_cluster_size=m, copy=True).fit(x).labels_
        with open(f"{name}.txt", "w") as f:
            f.write(encode(labels) + "\n")
        print(f"{name}: n={len(x)} dim={x.shape[1]} min_cluster_size={m} "
              f"clusters={labels.max() + 1} noise={(labels < 0).sum()} "
              f"sum={float(x.astype(np.float64).sum()):.6f}")
