"""Balanced hierarchical k-means: every node splits its items into equal-size children.

Level by level, a k-entry codebook is fitted (faiss k-means) on the items' *residuals* (the item
minus its parent's centroid), and within every parent the items are assigned to codebook entries
with fixed sizes: ⌊n/k⌋ or ⌈n/k⌉ items per child. So child sizes differ by at most one, a code
token means the same residual direction under every parent (as in RQ-style codes), and with
depth ⌈log_k N⌉ the last level holds at most one item per leaf: codes are unique by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BalancedKMeansConfig:
    k: int = 256
    depth: int | None = None  # None: the smallest depth with k**depth ≥ #items
    iterations: int = 20  # faiss k-means iterations per codebook
    refinements: int = 3  # balanced assign → recompute centroids rounds per level
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


def required_depth(num_items: int, k: int) -> int:
    """Smallest d ≥ 1 with k**d ≥ num_items (integer arithmetic, no float log)."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    depth, capacity = 1, k
    while capacity < num_items:
        depth, capacity = depth + 1, capacity * k
    return depth


def _fit_codebook(x: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    k = min(k, len(x))
    if k == len(x):
        return x.copy()
    import faiss  # here, not at import: training and serving read a built index and need neither

    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=iterations, seed=seed, verbose=False, spherical=False,
        min_points_per_centroid=1, max_points_per_centroid=1 << 20,
    )
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return kmeans.centroids.copy()


def _pairwise_sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def balanced_sizes(n: int, k: int) -> tuple[int, int]:
    """(size, how many children get one more): n = k·size + extra, 0 ≤ extra < k."""
    return n // k, n % k


def balanced_assign(dist: np.ndarray) -> np.ndarray:
    """Assign n points to k clusters minimising distance, with sizes ⌊n/k⌋ or ⌈n/k⌉.

    Small problems (n ≤ k: at most one point per cluster) are solved exactly by the Hungarian
    algorithm; larger ones greedily, closest (point, cluster) pairs first. The greedy rule lets a
    cluster grow to ⌈n/k⌉ only while fewer than ``n mod k`` clusters have done so, which is what
    keeps every size at ⌊n/k⌋ or ⌈n/k⌉.
    """
    n, k = dist.shape
    if n <= k:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(dist)
        out = np.empty(n, dtype=np.int64)
        out[rows] = cols
        return out
    base, extra = balanced_sizes(n, k)
    order = np.argsort(dist, axis=None, kind="stable")
    assignment = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    grown = 0  # clusters that already hold base + 1 points
    remaining = n
    for flat in order:
        point, cluster = divmod(int(flat), k)
        if assignment[point] >= 0:
            continue
        count = counts[cluster]
        if count < base or (count == base and grown < extra):
            if count == base:
                grown += 1
            assignment[point] = cluster
            counts[cluster] = count + 1
            remaining -= 1
            if remaining == 0:
                break
    return assignment


def balanced_hierarchical_codes(
    embeddings: np.ndarray, config: BalancedKMeansConfig = BalancedKMeansConfig()
) -> np.ndarray:
    """(items × depth) integer codes in [0, k); each row unique, children balanced at every node."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("no items to index")
    needed = required_depth(n, config.k)
    depth = config.depth or needed
    if depth < needed:
        raise ValueError(f"depth {depth} cannot give {n} items unique codes with k={config.k}; need ≥ {needed}")
    codes = np.zeros((n, depth), dtype=np.int64)
    groups = [np.arange(n)]
    residual = x.copy()
    for level in range(depth):
        seed = config.seed + level
        codebook = _fit_codebook(residual, config.k, config.iterations, seed)
        for _ in range(max(1, config.refinements)):
            for members in groups:
                codes[members, level] = balanced_assign(_pairwise_sq_dist(residual[members], codebook))
            # Re-centre each code on what was actually assigned to it (balanced Lloyd step).
            used = np.unique(codes[:, level])
            for c in used:
                codebook[c] = residual[codes[:, level] == c].mean(0)
        residual = residual - codebook[codes[:, level]]
        groups = _split_groups(codes[:, : level + 1])
    return codes


def _split_groups(prefixes: np.ndarray) -> list[np.ndarray]:
    """Indices of items grouped by identical code prefix."""
    _, inverse = np.unique(prefixes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)
