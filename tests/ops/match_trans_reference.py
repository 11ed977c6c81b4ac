"""MatchTrans in NumPy, by loops over positions and offsets: the reference that the
op's tests (compiled kernels, pure-TF twin, standalone GPU check) and the benchmark's
coefficient tests compare with."""

import numpy as np


def numpy_match_trans(f, fp, m, k, power=1.0):
    """Aligned memory `[B, H, W, D]` and coefficients `[B, H, W, (2k+1)^2]`, float64.

    Affinities `max(0, cos)^power`. Non-finite input as the op's rule: the in-bounds
    coefficients of a position are NaN when a feature norm of its window is not
    finite, its aligned memory is NaN when those are or a memory vector of its window
    is not finite.
    """
    f, fp, m = (x.astype(np.float64) for x in (f, fp, m))
    b, h, w, _ = f.shape
    side = 2 * k + 1
    with np.errstate(invalid="ignore"):
        nf = np.sqrt((f * f).sum(-1)) + 1e-8
        nfp = np.sqrt((fp * fp).sum(-1)) + 1e-8
    a = np.zeros((b, h, w, side * side))
    inside = np.zeros((h, w, side * side), bool)
    bad_features = ~np.isfinite(nf)  # [B, H, W]
    bad_memory = np.zeros((b, h, w), bool)
    memory_cell_bad = ~np.all(np.isfinite(m), axis=-1)
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            o = (dy + k) * side + dx + k
            for y in range(max(0, -dy), min(h, h - dy)):
                for x in range(max(0, -dx), min(w, w - dx)):
                    inside[y, x, o] = True
                    with np.errstate(invalid="ignore"):
                        cos = (f[:, y, x] * fp[:, y + dy, x + dx]).sum(-1) / (
                            nf[:, y, x] * nfp[:, y + dy, x + dx])
                    a[:, y, x, o] = np.where(np.isfinite(cos) & (cos > 0), cos, 0.0) ** power
                    bad_features[:, y, x] |= ~np.isfinite(nfp[:, y + dy, x + dx])
                    bad_memory[:, y, x] |= memory_cell_bad[:, y + dy, x + dx]
    mass = a.sum(-1, keepdims=True)
    identity = np.eye(side * side)[k * side + k]
    coef = np.where(mass >= 1e-7, a / np.where(mass >= 1e-7, mass, 1.0), identity)
    coef = np.where(bad_features[..., None] & inside, np.nan, coef)
    clean = np.where(np.isfinite(m), m, 0.0)
    out = np.zeros_like(m)
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            o = (dy + k) * side + dx + k
            for y in range(max(0, -dy), min(h, h - dy)):
                for x in range(max(0, -dx), min(w, w - dx)):
                    out[:, y, x] += coef[:, y, x, o, None] * clean[:, y + dy, x + dx]
    out = np.where(bad_memory[..., None], np.nan, out)
    return out, coef


def numpy_memory_gradient(coef, upstream, k):
    """The gradient of sum(aligned * upstream) for the memory: the transpose of the
    weighted sum, grad(q) = sum_o coef(q - o)[o] upstream(q - o). Float64."""
    grad = np.zeros(upstream.shape)
    side, (_, h, w, _) = 2 * k + 1, upstream.shape
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            o = (dy + k) * side + dx + k
            for y in range(max(0, -dy), min(h, h - dy)):
                for x in range(max(0, -dx), min(w, w - dx)):
                    grad[:, y + dy, x + dx] += (coef[:, y, x, o, None]
                                                * upstream[:, y, x].astype(np.float64))
    return grad
