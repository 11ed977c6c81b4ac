"""Independent NumPy references of the paper's equations, for the tests only.

Written from the authors' version of Eqs. 1-5, with plain loops where
that makes them easy to check by eye; none of stmn_tf's code is used.
"""

import numpy as np


def conv2d_same(x, kernel, bias=None):
    """Cross-correlation with `same` padding. x [B, H, W, C], kernel [kh, kw, C, D]."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += padded[:, dy : dy + height, dx : dx + width, :] @ kernel[dy, dx]
    if bias is not None:
        out += bias
    return out


def bn_star(x, std_multiplier=3.0):
    """clip(x, 0, ub) / ub with ub = mean + K * std (ddof=1) of the positive entries."""
    x = np.asarray(x, dtype=np.float64)
    positive = x[x > 0]
    upper_bound = 1.0
    if positive.size >= 2:
        with np.errstate(all="ignore"):
            candidate = positive.mean() + std_multiplier * positive.std(ddof=1)
        if np.isfinite(candidate) and candidate > 0:
            upper_bound = candidate
    return np.clip(x, 0.0, upper_bound) / upper_bound, upper_bound


def match_trans(features, prev_features, prev_memory, k, affinity_power=1.0,
                centre_features=False, offset_prior=None):
    """Per position and offset: ReLU'd cosine over in-bounds neighbours, raised to
    `affinity_power`, times `exp(offset_prior[o])` when given, normalised; with
    `centre_features`, the cosine of each frame's features minus their mean over its
    positions."""
    if centre_features:
        features = features - features.mean(axis=(1, 2), keepdims=True)
        prev_features = prev_features - prev_features.mean(axis=(1, 2), keepdims=True)
    batch, height, width, _ = features.shape
    out = np.zeros(prev_memory.shape, dtype=np.float64)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                f = features[b, y, x]
                weights, memories = [], []
                for i in range(-k, k + 1):
                    for j in range(-k, k + 1):
                        yy, xx = y + i, x + j
                        if not (0 <= yy < height and 0 <= xx < width):
                            continue  # skipped, not zero padded
                        g = prev_features[b, yy, xx]
                        cosine = f @ g / (
                            (np.linalg.norm(f) + 1e-8) * (np.linalg.norm(g) + 1e-8)
                        )
                        prior = 1.0 if offset_prior is None else np.exp(
                            offset_prior[(i + k) * (2 * k + 1) + j + k])
                        weights.append(max(0.0, cosine) ** affinity_power * prior)
                        memories.append(prev_memory[b, yy, xx])
                mass = sum(weights)
                if mass >= 1e-7:
                    out[b, y, x] = sum(w * m for w, m in zip(weights, memories)) / mass
                else:
                    out[b, y, x] = prev_memory[b, y, x]
    return out


def stmm_step(weights, features, prev_features, memory, *, k, align, scale=1.0,
              std_multiplier=3.0, gru=False, affinity_power=1.0, centre_features=False,
              offset_prior=None):
    """The authors' STMM step (or the ConvGRU step when `gru`).

    weights: dict with kernels w, z_w, r_w, u, z_u, r_u and biases b_w, b_z, b_r.
    Returns (new memory, z, r).
    """
    m = (match_trans(features, prev_features, memory, k, affinity_power, centre_features,
                     offset_prior) if align else memory)
    wf = scale * conv2d_same(features, weights["w"], weights["b_w"])
    zf = scale * conv2d_same(features, weights["z_w"], weights["b_z"])
    rf = scale * conv2d_same(features, weights["r_w"], weights["b_r"])
    if gru:
        sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        z = sigmoid(zf + conv2d_same(m, weights["z_u"]))
        r = sigmoid(rf + conv2d_same(m, weights["r_u"]))
        candidate = np.tanh(wf + conv2d_same(r * m, weights["u"]))
    else:
        relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
        z, _ = bn_star(relu(zf + conv2d_same(m, weights["z_u"])), std_multiplier)  # Eq. 1
        r, _ = bn_star(relu(rf + conv2d_same(m, weights["r_u"])), std_multiplier)  # Eq. 2
        candidate = relu(wf + conv2d_same(r * m, weights["u"]))  # Eq. 3
    return (1.0 - z) * m + z * candidate, z, r  # Eq. 4


def stmm_sequence(weights, clip, *, k, align, reverse=False, **kwargs):
    """Runs `stmm_step` over clip [B, T, H, W, C] from zero memory, F_0 = F_1.

    Returns the memories [B, T, H, W, D] at their frames' indices.
    """
    steps = clip.shape[1]
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    filters = weights["u"].shape[-1]
    memory = np.zeros(clip.shape[:1] + clip.shape[2:4] + (filters,))
    outputs = np.zeros(clip.shape[:4] + (filters,))
    prev = None
    for t in order:
        features = clip[:, t]
        prev = features if prev is None else prev
        memory, _, _ = stmm_step(weights, features, prev, memory, k=k, align=align, **kwargs)
        outputs[:, t] = memory
        prev = features
    return outputs


def random_weights(rng, channels, filters, kernel_size=3, scale=0.4):
    """Random kernels and biases for `stmm_step`."""
    shape_w = (kernel_size, kernel_size, channels, filters)
    shape_u = (kernel_size, kernel_size, filters, filters)
    weights = {name: rng.normal(0, scale, shape_w) for name in ("w", "z_w", "r_w")}
    weights.update({name: rng.normal(0, scale, shape_u) for name in ("u", "z_u", "r_u")})
    weights.update({name: rng.normal(0, 0.1, filters) for name in ("b_w", "b_z", "b_r")})
    return weights


def set_cell_weights(cell, weights):
    """Assigns `random_weights` to an STMMCell / ConvGRUCell."""
    for name in ("w", "z_w", "r_w"):
        conv = getattr(cell, "conv_" + name)
        conv.kernel.assign(weights[name])
        conv.bias.assign(weights["b_" + name[0]])
    for name in ("u", "z_u", "r_u"):
        getattr(cell, "conv_" + name).kernel.assign(weights[name])


def build_in_mixed_float16(build):
    """`build()` under the mixed_float16 dtype policy, which is then set back."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")
