"""MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3) in standard TensorFlow ops.

What portable SavedModels and machines without the compiled library run. The same
semantics as the compiled op (the authors' implementation rather than the paper's
Eq. 5): ReLU'd cosine affinities with 1e-8 added to each norm, neighbours outside the
map skipped, normalisation by the in-bounds sum, the memory kept as it is where that
sum is below 1e-7, and no gradient to the features.

`match_trans` and `coefficients` compute the window as banded matrix products. The
map is flattened to positions `p = (b*H + y)*W + x`, so that the neighbour at offset
`(dy, dx)` is `p + dy*W + dx`. For each row offset `dy`, the positions are cut into
tiles of `tile` consecutive positions and each tile is multiplied with the tile of
neighbours `dy*W` further on: `[tile, C] x [C, tile]`, one batched matmul over all
tiles. A pair whose column offset `dx` crosses a tile boundary is inside a tile of a
second tiling shifted by `tile/2` (as `tile/2 >= k`), so two tilings cover every
pair; each pair is taken from exactly one of them (the first where it fits), and the
band is read out with a constant gather. The weighted sum of the memory is the same
product the other way round (a banded `[tile, tile]` coefficient matrix times the
memory's neighbour tile `[tile, D]`), and the memory gradient is that product with the
transposed coefficients. Slices along the flattened axis need no copy, so the features
are read by matmul kernels, not by 25 elementwise passes. Row wrap-around (`x + dx`
outside the row, `y + dy` outside the image) is masked on the small affinity tensor.

`match_trans_shifted` and `coefficients_shifted` are the previous formulation (25
shifted elementwise products over the padded map), kept for one release as a
reference and a benchmark row.

Shapes (NHWC): features and prev_features `[B, H, W, C]`, prev_memory `[B, H, W, D]`,
coefficients `[B, H, W, (2k+1)^2]` with offset `(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`.
float16 inputs are computed in float32 (as the compiled op accumulates them), float64
in float64.
"""

import numpy as np
import tensorflow as tf

NORM_EPSILON = 1e-8  # added to each norm, as in the authors' code
MIN_MASS = 1e-7  # below this the window has no positive affinity: identity

DEFAULT_TILE = 8


def tile_width(k, tile=None):
    """The tile width: even and at least 2k, so that two tilings cover the window.

    Args:
      k: int. The window radius.
      tile: int or None. A requested width; None for `DEFAULT_TILE`.

    Returns:
      The smallest even width >= max(tile, 2k, 2).
    """
    width = DEFAULT_TILE if tile is None else int(tile)
    if width < 1:
        raise ValueError(f"MatchTrans: tile must be a positive integer, got {tile!r}")
    width = max(width, 2 * k, 2)
    return width + width % 2


def _compute_dtype(dtype):
    return tf.float64 if dtype == tf.float64 else tf.float32


def _band_tables(tile, k):
    """Constant tables of the band inside a `[tile, tile]` tile product.

    Returns:
      read: `[tile, 2k+1]` int, flat index `i*tile + j` of pair (i, j = i + dx) in a
        tile product (clipped where j falls outside; `first` masks those).
      first: `[tile, 2k+1]` bool, whether the pair (i, i + dx) lies inside the tile of
        the first tiling (else it lies in the second tiling's tile, shifted by tile/2).
      write: `[tile, tile]` int, for building a banded matrix from `[tile, 2k+1]`
        values flattened with a zero appended: index `i*(2k+1) + (j - i + k)` inside
        the band, `tile*(2k+1)` (the zero) outside.
    """
    side = 2 * k + 1
    i = np.arange(tile)[:, None]
    j = i + np.arange(-k, k + 1)[None, :]
    first = (j >= 0) & (j < tile)
    read = i * tile + np.clip(j, 0, tile - 1)
    offset = np.arange(tile)[None, :] - i + k
    write = np.where((offset >= 0) & (offset < side), i * side + np.clip(offset, 0, side - 1),
                     tile * side)
    return read.astype(np.int32), first, write.astype(np.int32)


class _Layout:
    """Flattened positions and the two tilings of one call (dynamic shapes).

    Positions `[P, *]` (P = B*H*W) are padded at the end to `n*tile` for the first
    tiling (tiles start at 0) and the second (tiles start at tile/2, n - 1 of them);
    neighbour tensors are padded by `k*W` in front and `k*W + n*tile - P` behind, so
    that the neighbour tile of either tiling at any row offset is a plain slice.
    """

    def __init__(self, shape, k, tile):
        self.k = k
        self.tile = tile
        self.half = tile // 2
        self.side = 2 * k + 1
        self.batch, self.height, self.width = shape[0], shape[1], shape[2]
        self.positions = self.batch * self.height * self.width
        self.n = (self.positions + tile - 1) // tile + 1
        self.padded = self.n * tile
        self.tables = _band_tables(tile, k)

    def flat(self, x):
        """`[B, H, W, C]` -> `[P, C]`."""
        return tf.reshape(x, [self.positions, tf.shape(x)[-1]])

    def pad_positions(self, x):
        """`[P, ...]` -> `[n*tile, ...]`, zeros behind."""
        pad = [[0, self.padded - self.positions]] + [[0, 0]] * (x.shape.rank - 1)
        return tf.pad(x, pad)

    def pad_neighbours(self, x):
        """`[P, ...]` -> `[k*W + n*tile + k*W, ...]`, zeros around."""
        front = self.k * self.width
        pad = [[front, front + self.padded - self.positions]] + [[0, 0]] * (x.shape.rank - 1)
        return tf.pad(x, pad)

    def tiles(self, x, start, second):
        """Tiles `[n or n-1, tile, C]` of `x` (flat) from position `start`."""
        count = self.n - 1 if second else self.n
        start = start + (self.half if second else 0)
        return tf.reshape(x[start:start + count * self.tile], [count, self.tile, tf.shape(x)[-1]])

    def neighbour_tiles(self, x, dy, second):
        """Tiles of a neighbour tensor (from `pad_neighbours`) at row offset dy."""
        return self.tiles(x, (self.k + dy) * self.width, second)

    def in_bounds(self):
        """`[B*H*W, (2k+1)^2]` bool: the neighbour at each offset is inside the map."""
        y = tf.range(self.height)[:, None, None]
        x = tf.range(self.width)[None, :, None]
        offsets = np.arange(-self.k, self.k + 1)
        dy = np.repeat(offsets, self.side)[None, None, :]
        dx = np.tile(offsets, self.side)[None, None, :]
        inside = ((y + dy >= 0) & (y + dy < self.height) & (x + dx >= 0) & (x + dx < self.width))
        inside = tf.reshape(inside, [1, self.height * self.width, self.side * self.side])
        return tf.reshape(tf.tile(inside, [self.batch, 1, 1]), [self.positions, -1])


def _window_dots(layout, features, neighbours):
    """`[P, (2k+1)^2]` dot products of each position with its window (flat inputs).

    `features` `[P, C]`, `neighbours` `[k*W + n*tile + k*W, C]` (from
    `pad_neighbours`). Out-of-map neighbours give garbage here; the caller masks.
    """
    read, first, _ = layout.tables
    tile, half, side = layout.tile, layout.half, layout.side
    padded = layout.pad_positions(features)
    rows = []
    for dy in range(-layout.k, layout.k + 1):
        bands = []
        for second in (False, True):
            product = tf.matmul(layout.tiles(padded, 0, second),
                                layout.neighbour_tiles(neighbours, dy, second),
                                transpose_b=True)  # [tiles, tile, tile]
            band = tf.gather(tf.reshape(product, [-1, tile * tile]), read, axis=1)
            bands.append(tf.reshape(band, [-1, side]))  # [tiles*tile, 2k+1]
        second_band = tf.pad(bands[1], [[half, half], [0, 0]])  # aligned to the first tiling
        both = tf.where(first[None], tf.reshape(bands[0], [-1, tile, side]),
                        tf.reshape(second_band, [-1, tile, side]))
        rows.append(tf.reshape(both, [-1, side]))
    dots = tf.stack(rows, axis=1)  # [n*tile, 2k+1 (dy), 2k+1 (dx)]
    return tf.reshape(dots[: layout.positions], [layout.positions, side * side])


def _offsets(layout):
    """`[1, (2k+1)^2]` int32: the flat offset `dy*W + dx` of each window offset."""
    offsets = tf.range(-layout.k, layout.k + 1)
    return tf.reshape(offsets[:, None] * layout.width + offsets[None, :], [1, -1])


def _neighbour_values(layout, values):
    """`[P, (2k+1)^2]`: `values` `[P]` at each position's neighbours (0 outside)."""
    extended = tf.pad(values, [[layout.k * layout.width + layout.k] * 2])
    base = tf.range(layout.positions)[:, None] + layout.k * layout.width + layout.k
    return tf.gather(extended, base + _offsets(layout))


def _normalised(layout, features, prev_features, inside):
    """The coefficients `[P, (2k+1)^2]` in the compute dtype (flat inputs)."""
    neighbours = layout.pad_neighbours(prev_features)
    dots = _window_dots(layout, features, neighbours)
    norm = tf.sqrt(tf.reduce_sum(tf.square(features), axis=-1)) + NORM_EPSILON
    prev_norm = tf.sqrt(tf.reduce_sum(tf.square(prev_features), axis=-1)) + NORM_EPSILON
    cosine = dots / (norm[:, None] * _neighbour_values(layout, prev_norm))
    a = tf.where(inside, tf.nn.relu(cosine), tf.zeros_like(cosine))
    mass = tf.reduce_sum(a, axis=-1, keepdims=True)
    centre = layout.k * layout.side + layout.k
    identity = tf.one_hot(centre, layout.side * layout.side, dtype=a.dtype)
    use_identity = mass < MIN_MASS
    return tf.where(use_identity, identity, a / tf.where(use_identity, tf.ones_like(mass), mass))


def _banded_sum(layout, coefficients, neighbours):
    """`[P, D]`: sum over the window of coefficient x neighbour value.

    `coefficients` `[P, (2k+1)^2]` (zero outside the map), `neighbours`
    `[k*W + n*tile + k*W, D]` (from `pad_neighbours`).
    """
    _, first, write = layout.tables
    tile, half, side = layout.tile, layout.half, layout.side
    c = tf.reshape(layout.pad_positions(coefficients), [-1, tile, side, side])
    zero = tf.zeros([layout.n, tile, side], c.dtype)
    outputs = [[], []]
    for row in range(side):
        z = c[:, :, row, :]  # [n, tile, 2k+1]: this row offset's coefficients
        # Each pair in exactly one tiling: the first where it fits, else the second.
        parts = (tf.where(first[None], z, zero), tf.where(first[None], zero, z))
        for second, part in enumerate(parts):
            if second:
                part = tf.reshape(part, [-1, side])[half: half + (layout.n - 1) * tile]
            part = tf.reshape(part, [-1, tile * side])
            part = tf.pad(part, [[0, 0], [0, 1]])  # the zero that `write` points at
            banded = tf.gather(part, write, axis=1)  # [tiles, tile, tile]
            values = layout.neighbour_tiles(neighbours, row - layout.k, bool(second))
            outputs[second].append(tf.matmul(banded, values))  # [tiles, tile, D]
    depth = tf.shape(neighbours)[-1]
    first_sum = tf.reshape(tf.add_n(outputs[0]), [-1, depth])
    second_sum = tf.pad(tf.reshape(tf.add_n(outputs[1]), [-1, depth]), [[half, half], [0, 0]])
    return (first_sum + second_sum)[: layout.positions]


def _transposed(layout, coefficients):
    """`c'(q, o) = c(q + o, -o)`: the coefficients of the memory gradient, `[P, (2k+1)^2]`."""
    window = layout.side * layout.side
    margin = layout.k * layout.width + layout.k
    extended = tf.reshape(tf.pad(coefficients, [[margin, margin], [0, 0]]), [-1])
    shifts = _offsets(layout)
    mirrored = np.arange(window)[::-1].copy()[None, :]  # index of -o
    rows = tf.range(layout.positions)[:, None] + margin + shifts
    return tf.gather(extended, rows * window + mirrored)


def _banded_align(layout, coefficients, memory):
    """The weighted sum with its exact memory gradient (the transposed band)."""

    @tf.custom_gradient
    def align(memory):
        out = _banded_sum(layout, coefficients, layout.pad_neighbours(memory))

        def grad(upstream):
            transposed = _transposed(layout, coefficients)
            return _banded_sum(layout, transposed, layout.pad_neighbours(upstream))

        return out, grad

    return align(memory)


def coefficients(features, prev_features, k, tile=None):
    """The normalised coefficients `[B, H, W, (2k+1)^2]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).

    Returns:
      `[B, H, W, (2k+1)^2]`, offset `(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`, zero for
      out-of-map neighbours, a one-hot at the centre where the window's mass is below
      1e-7. No gradient.
    """
    compute = _compute_dtype(features.dtype)
    shape = tf.shape(features)
    layout = _Layout(shape, k, tile_width(k, tile))
    f = layout.flat(tf.cast(tf.stop_gradient(features), compute))
    fp = layout.flat(tf.cast(tf.stop_gradient(prev_features), compute))
    c = _normalised(layout, f, fp, layout.in_bounds())
    out_shape = tf.concat([shape[:3], [layout.side * layout.side]], 0)
    return tf.cast(tf.stop_gradient(tf.reshape(c, out_shape)), features.dtype)


def match_trans(features, prev_features, prev_memory, k, tile=None):
    """`prev_memory` aligned to `features`: `[B, H, W, D]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      prev_memory: `[B, H, W, D]`, same dtype; the only input with a gradient.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).

    Returns:
      `sum_o c(p, o) * prev_memory(p + o)` over the in-map window, `[B, H, W, D]`.
    """
    compute = _compute_dtype(features.dtype)
    shape = tf.shape(prev_memory)
    layout = _Layout(shape, k, tile_width(k, tile))
    f = layout.flat(tf.cast(tf.stop_gradient(features), compute))
    fp = layout.flat(tf.cast(tf.stop_gradient(prev_features), compute))
    c = tf.stop_gradient(_normalised(layout, f, fp, layout.in_bounds()))
    m = layout.flat(tf.cast(prev_memory, compute))
    out = _banded_align(layout, c, m)
    return tf.cast(tf.reshape(out, shape), prev_memory.dtype)


# ----------------------------------------------------------------------------------
# The previous formulation, kept for one release as a reference.


def coefficients_shifted(features, prev_features, k):
    """As `coefficients`, with 25 shifted elementwise products over the padded map."""
    compute_dtype = _compute_dtype(features.dtype)
    f = tf.cast(features, compute_dtype)
    fp = tf.cast(prev_features, compute_dtype)
    f = f / (tf.norm(f, axis=-1, keepdims=True) + NORM_EPSILON)
    fp = fp / (tf.norm(fp, axis=-1, keepdims=True) + NORM_EPSILON)
    h, w = tf.shape(f)[1], tf.shape(f)[2]
    paddings = [[0, 0], [k, k], [k, k], [0, 0]]
    fp_padded = tf.pad(fp, paddings)
    # In-bounds mask of each offset, so that out-of-bounds neighbours are skipped.
    inside = tf.pad(tf.ones_like(fp[..., :1]), paddings)
    affinities, masks = [], []
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            neighbour = fp_padded[:, dy: dy + h, dx: dx + w, :]
            affinities.append(tf.reduce_sum(f * neighbour, axis=-1))
            masks.append(inside[:, dy: dy + h, dx: dx + w, 0])
    a = tf.nn.relu(tf.stack(affinities, axis=-1)) * tf.stack(masks, axis=-1)
    mass = tf.reduce_sum(a, axis=-1, keepdims=True)
    identity = tf.one_hot((2 * k + 1) * k + k, (2 * k + 1) ** 2, dtype=compute_dtype)
    use_identity = mass < MIN_MASS
    c = tf.where(use_identity, identity, a / tf.where(use_identity, tf.ones_like(mass), mass))
    return tf.stop_gradient(tf.cast(c, features.dtype))


def match_trans_shifted(features, prev_features, prev_memory, k):
    """As `match_trans`, with 25 shifted elementwise products over the padded map."""
    c = coefficients_shifted(features, prev_features, k)
    compute_dtype = _compute_dtype(prev_memory.dtype)
    m = tf.cast(prev_memory, compute_dtype)
    c = tf.cast(c, compute_dtype)
    h, w = tf.shape(m)[1], tf.shape(m)[2]
    m_padded = tf.pad(m, [[0, 0], [k, k], [k, k], [0, 0]])
    out = tf.zeros_like(m)
    side = 2 * k + 1
    for dy in range(side):
        for dx in range(side):
            out += c[..., dy * side + dx, None] * m_padded[:, dy: dy + h, dx: dx + w, :]
    return tf.cast(out, prev_memory.dtype)
