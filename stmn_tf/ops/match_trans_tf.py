"""MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3) in standard TensorFlow ops.

What portable SavedModels and machines without the compiled library run. The same
semantics as the compiled op (the authors' implementation rather than the paper's
Eq. 5): ReLU'd cosine affinities with 1e-8 added to each norm, raised to
`affinity_power` (1, the authors' formula, by default), neighbours outside the map
skipped, normalisation by the in-bounds sum, the memory kept as it is where that sum
(of the powered affinities) is below 1e-7, and no gradient to the features.

Non-finite input, the rule of the compiled op (custom_ops/match_trans/match_trans.h):
the coefficients of position p are NaN at its in-bounds offsets (0 outside the map)
when the squared norm of `features(p)` or of any in-bounds `prev_features(q)` is not
finite; the aligned memory of p is NaN in every channel when its coefficients are, or
when any in-bounds `prev_memory(q)` holds a NaN or an Inf (whatever its coefficient).
Elsewhere the output is the formula's: one bad cell changes only the positions whose
window holds it. The banded products below would otherwise spread a NaN of the memory
to the whole tile (0 * NaN), so the neighbour tiles read a finite cell in place of a
non-finite one and the rule is applied through a NaN coefficient (index work on small
tensors, no extra pass over the memory but the check).

`match_trans` and `coefficients` compute the window as banded matrix products. The
map's rows are laid end to end with the row length padded to `stride`, a multiple of
the tile width: grid position `p = (b*H + y)*stride + x`, whose neighbour at offset
`(dy, dx)` is `p + dy*stride + dx`. The grid is cut into tiles of `tile` positions;
for each row offset dy, every tile is multiplied with its neighbour tile (the `tile +
2k` positions from k before to k after the tile, dy rows away): `[tile, C] x [C,
tile + 2k]`, one batched matmul over all tiles, whose band holds the window's dot
products and is read out with a constant gather. The neighbour tiles are gathered
once from the unpadded map (one pass, no padded copy); since a row holds a whole
number of tiles, those of row offset dy are a plain slice of them. The weighted sum of the memory is the same product the other way round (the
banded `[tile, tile + 2k]` coefficient matrix times the memory's `[tile + 2k, D]`
neighbour tile), and the memory gradient is that product with the transposed
coefficients `c'(q, o) = c(q + o, -o)`. Neighbours outside the map (past a row's
end, in another row or image, in the padding) are masked on the small affinity
tensor, so they are skipped, not zero padded.

`match_trans_shifted` and `coefficients_shifted` are the previous formulation (25
shifted elementwise products over the padded map), kept for one release as a
reference and a benchmark row.

Shapes (NHWC): features and prev_features `[B, H, W, C]`, prev_memory `[B, H, W, D]`,
coefficients `[B, H, W, (2k+1)^2]` with offset `(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`.
float16 inputs are computed in float32 (as the compiled op accumulates them), float64
in float64.
"""

import functools

import numpy as np
import tensorflow as tf

NORM_EPSILON = 1e-8  # added to each norm, as in the authors' code
# float16 has no 1e-8 (TFLite's float16 export stores constants in it): the epsilon is
# added to the norm taken 2^14 times larger, where it is 1.6e-4; a power of two scales
# exactly, so float32 and float64 give the same bits as `norm + NORM_EPSILON`.
NORM_SCALE = 2.0**14
MIN_MASS = 1e-7  # below this the window has no positive affinity: identity

DEFAULT_TILE = 8

FLOAT_DTYPES = (tf.float16, tf.float32, tf.float64)


def check_dtypes(features, prev_features, prev_memory=None):
    """Refuses what the compiled op has no kernel for, with the same message.

    Args:
      features, prev_features, prev_memory: tensors (prev_memory may be None).

    Raises:
      TypeError: naming the argument, when `features` is not float16, float32 or
        float64, or `prev_features` / `prev_memory` has another dtype than `features`.
    """
    if features.dtype not in FLOAT_DTYPES:
        raise TypeError(
            "MatchTrans: features must be float16, float32 or float64, got "
            f"{features.dtype.name}"
        )
    for name, t in (("prev_features", prev_features), ("prev_memory", prev_memory)):
        if t is not None and t.dtype != features.dtype:
            raise TypeError(
                f"MatchTrans: {name} must have the dtype of features "
                f"({features.dtype.name}), got {t.dtype.name}"
            )


def check_affinity_power(affinity_power):
    """The power as the compiled op's float attr holds it (float32), once checked.

    Raises:
      ValueError: when `affinity_power` is not a finite number > 0.
    """
    if isinstance(affinity_power, bool) or not isinstance(
        affinity_power, (int, float, np.floating, np.integer)
    ):
        raise ValueError(
            f"MatchTrans: affinity_power must be a finite number > 0, got {affinity_power!r}"
        )
    power = float(np.float32(affinity_power))
    if not np.isfinite(power) or power <= 0.0:
        raise ValueError(
            f"MatchTrans: affinity_power must be a finite number > 0, got {affinity_power!r}"
        )
    return power


def tile_width(k, tile=None):
    """The tile width: at least k (a neighbour tile reaches one tile either side).

    Args:
      k: int. The window radius.
      tile: int or None. A requested width; None for `DEFAULT_TILE`.

    Returns:
      max(tile, k, 1).
    """
    width = DEFAULT_TILE if tile is None else tile
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"MatchTrans: tile must be a positive integer, got {tile!r}")
    return max(width, k, 1)


def _compute_dtype(dtype):
    return tf.float64 if dtype == tf.float64 else tf.float32


def _band_tables(tile, k):
    """Constant tables of the band inside a `[tile, tile + 2k]` tile product.

    Row i of a tile meets its neighbour at column offset dx in column `i + dx + k` of
    the neighbour tile (which starts k positions before the tile).

    Returns:
      read: `[tile, 2k+1]` int32, flat index `i*(tile+2k) + i + dx + k` of each band
        entry in a `[tile, tile + 2k]` product.
      write: `[tile, tile + 2k]` int32, for building the banded matrix from
        `[tile, 2k+1]` values flattened with a zero appended: `i*(2k+1) + (j - i)`
        inside the band, `tile*(2k+1)` (the zero) outside.
    """
    side = 2 * k + 1
    width = tile + 2 * k
    i = np.arange(tile)[:, None]
    read = i * width + i + np.arange(side)[None, :]
    offset = np.arange(width)[None, :] - i
    write = np.where((offset >= 0) & (offset < side), i * side + np.clip(offset, 0, side - 1),
                     tile * side)
    return read.astype(np.int32), write.astype(np.int32)


class _Layout:
    """The position grid and the neighbour tiles of one call (dynamic shapes).

    Positions are the map's rows laid end to end with the row length padded to
    `stride`, a multiple of `tile`: grid position `p = (b*H + y)*stride + x`, cut
    into `n` tiles of `tile` positions. A neighbour tile is `tile + 2k` positions, k
    before and k after a tile; as a row holds a whole number of tiles, the neighbour
    tile of tile t at row offset dy is neighbour tile `t + dy*stride/tile` of one
    tensor gathered once, a plain slice. The index tables (`neighbour_cells`,
    `window_cells`, `in_bounds`) are built once per call and shared by the
    coefficients, the weighted sum and its gradient. Neighbours outside the map (other rows, other
    images, the padding, the rows before and after the map, which read cell 0) are
    masked on the affinities and so get zero coefficients.
    """

    def __init__(self, shape, k, tile):
        self.k = k
        self.tile = tile
        self.side = 2 * k + 1
        self.batch, self.height, self.width = shape[0], shape[1], shape[2]
        self.stride = (self.width + tile - 1) // tile * tile
        self.per_row = self.stride // tile
        self.rows = self.batch * self.height
        self.positions = self.rows * self.stride
        self.n = self.rows * self.per_row
        self.cells = self.rows * self.width  # B*H*W
        self.tables = _band_tables(tile, k)

    def grid(self, x):
        """`[B, H, W, C]` -> `[positions, C]`, zeros in the padding columns."""
        x = tf.reshape(x, [self.rows, self.width, tf.shape(x)[-1]])
        x = tf.pad(x, [[0, 0], [0, self.stride - self.width], [0, 0]])
        return tf.reshape(x, [-1, tf.shape(x)[-1]])

    def tiles(self, grid):
        """`[positions, C]` -> `[n, tile, C]` (a reshape)."""
        return tf.reshape(grid, [self.n, self.tile, tf.shape(grid)[-1]])

    def cell_index(self, grid_positions):
        """The map cell of grid positions (any int32 shape), as an index into the
        flat `[B*H*W]` map, and whether it is one: positions in the padding columns
        or in the rows before and after the map are not, and read cell 0 instead
        (their products are masked or multiplied by a zero coefficient)."""
        row = tf.math.floordiv(grid_positions, tf.maximum(self.stride, 1))  # W = 0: no positions
        x = grid_positions - row * self.stride
        inside = (row >= 0) & (row < self.rows) & (x < self.width)
        return tf.where(inside, row * self.width + x, tf.zeros_like(grid_positions)), inside

    @functools.cached_property
    def neighbour_cells(self):
        """`[n + 2k*per_row, tile + 2k]` int32: the cell index (`cell_index`) of every
        neighbour tile's positions. Neighbour tile u covers grid positions
        `u*tile - k*stride - k + j`, j in [0, tile + 2k)."""
        # No neighbour tiles for an empty map: it has no cell 0 to read.
        count = (self.n + 2 * self.k * self.per_row) * tf.cast(self.cells > 0, tf.int32)
        start = tf.range(count) * self.tile - self.k * self.stride - self.k
        cells, _ = self.cell_index(start[:, None] + tf.range(self.tile + 2 * self.k)[None, :])
        return cells

    def neighbours(self, flat, cells):
        """`flat` `[B*H*W, C]`, `cells` from `neighbour_cells` -> the neighbour tiles
        `[n + 2k*per_row, tile + 2k, C]`: one gather, no padded copy of the map."""
        return tf.gather(flat, cells)

    def at_row_offset(self, neighbour_tiles, dy):
        """The neighbour tile of each of the n tiles at row offset dy: `[n, tile+2k, C]`."""
        start = (self.k + dy) * self.per_row
        return neighbour_tiles[start: start + self.n]

    def offsets(self):
        """`[1, (2k+1)^2]` int32: the grid offset `dy*stride + dx` of each window offset."""
        offsets = tf.range(-self.k, self.k + 1)
        return tf.reshape(offsets[:, None] * self.stride + offsets[None, :], [1, -1])

    @functools.cached_property
    def window_cells(self):
        """`[positions, (2k+1)^2]` int32: the cell index (`cell_index`) of each
        position's neighbour at each window offset (masked by `in_bounds`)."""
        cells, _ = self.cell_index(tf.range(self.positions)[:, None] + self.offsets())
        return cells

    def window_any(self, flags):
        """`[positions]` bool: a flagged cell in the in-bounds window of each position.

        `flags`: `[B*H*W]` bool, one per cell of the map.
        """
        return tf.reduce_any(tf.gather(flags, self.window_cells) & self.in_bounds, axis=-1)

    @functools.cached_property
    def in_bounds(self):
        """`[positions, (2k+1)^2]` bool: the neighbour at each offset is inside the map."""
        y = tf.range(self.height)[:, None, None]
        x = tf.range(self.stride)[None, :, None]
        offsets = np.arange(-self.k, self.k + 1)
        dy = np.repeat(offsets, self.side)[None, None, :]
        dx = np.tile(offsets, self.side)[None, None, :]
        inside = (y + dy >= 0) & (y + dy < self.height) & (x + dx >= 0) & (x + dx < self.width)
        inside = tf.reshape(inside, [1, self.height * self.stride, self.side * self.side])
        return tf.reshape(tf.tile(inside, [self.batch, 1, 1]),
                          [self.positions, self.side * self.side])

    def ungrid(self, grid):
        """`[positions, D]` -> `[B, H, W, D]` (drops the padding columns)."""
        depth = tf.shape(grid)[-1]
        x = tf.reshape(grid, [self.rows, self.stride, depth])[:, : self.width]
        return tf.reshape(x, [self.batch, self.height, self.width, depth])


def _norm_plus_epsilon(x):
    """`[N, C]` -> `[N]`: the L2 norm plus NORM_EPSILON, computed at NORM_SCALE."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1))
    return (norm * NORM_SCALE + NORM_SCALE * NORM_EPSILON) / NORM_SCALE


def _normalised(layout, features, prev_features, affinity_power):
    """The coefficients on the grid, `[positions, (2k+1)^2]`, in the compute dtype.

    `features`, `prev_features`: `[B, H, W, C]` in the compute dtype. NaN at the
    in-bounds offsets of positions whose window has a non-finite feature norm.
    """
    read, _ = layout.tables
    tile, side = layout.tile, layout.side
    grid = layout.grid(features)  # [positions, C]
    f = layout.tiles(grid)  # [n, tile, C]
    flat = tf.reshape(prev_features, [-1, tf.shape(prev_features)[-1]])  # [B*H*W, C]
    neighbour_tiles = layout.neighbours(flat, layout.neighbour_cells)  # [n + .., tile + 2k, C]
    rows = []
    for dy in range(-layout.k, layout.k + 1):
        # The window's dot products in row dy: one [tile, C] x [C, tile + 2k] per tile.
        product = tf.matmul(f, layout.at_row_offset(neighbour_tiles, dy), transpose_b=True)
        band = tf.gather(tf.reshape(product, [layout.n, tile * (tile + 2 * layout.k)]), read,
                         axis=1)  # [n, tile, 2k+1]
        rows.append(tf.reshape(band, [layout.positions, side]))
    dots = tf.reshape(tf.stack(rows, axis=1), [layout.positions, side * side])
    norm = _norm_plus_epsilon(grid)
    prev_norm = _norm_plus_epsilon(flat)
    neighbour_norm = tf.gather(prev_norm, layout.window_cells)
    cosine = dots / (norm[:, None] * neighbour_norm)
    in_bounds = layout.in_bounds
    a = tf.where(in_bounds, tf.nn.relu(cosine), tf.zeros_like(cosine))
    if affinity_power != 1.0:  # 1: the authors' numbers, no pow
        a = tf.pow(a, tf.cast(affinity_power, a.dtype))
    mass = tf.reduce_sum(a, axis=-1, keepdims=True)
    centre = layout.k * side + layout.k
    identity = tf.one_hot(centre, side * side, dtype=a.dtype)
    use_identity = mass < MIN_MASS
    c = tf.where(use_identity, identity, a / tf.where(use_identity, tf.ones_like(mass), mass))
    # The non-finite rule (module docstring): a NaN or Inf norm in the window.
    bad = ~tf.math.is_finite(norm) | tf.reduce_any(
        ~tf.math.is_finite(neighbour_norm) & in_bounds, axis=-1)
    poisoned = tf.where(in_bounds, tf.constant(np.nan, c.dtype), tf.zeros_like(c))
    return tf.where(bad[:, None], poisoned, c)


def _banded_sum(layout, coefficients, values, cells):
    """`[positions, D]`: the sum over the window of coefficient x neighbour value.

    `coefficients` `[positions, (2k+1)^2]` (zero outside the map), `values`
    `[B, H, W, D]`, `cells` the neighbour tiles' cell indices (`neighbour_cells`,
    pointing at finite values only, as the zero coefficients multiply them).
    """
    _, write = layout.tables
    tile, side = layout.tile, layout.side
    neighbour_tiles = layout.neighbours(tf.reshape(values, [-1, tf.shape(values)[-1]]), cells)
    c = tf.reshape(coefficients, [layout.n, tile, side, side])
    outputs = []
    for row in range(side):
        z = tf.reshape(c[:, :, row, :], [layout.n, tile * side])
        z = tf.pad(z, [[0, 0], [0, 1]])  # the zero that `write` points at
        banded = tf.gather(z, write, axis=1)  # [n, tile, tile + 2k]
        outputs.append(tf.matmul(banded, layout.at_row_offset(neighbour_tiles, row - layout.k)))
    return tf.reshape(tf.add_n(outputs), [layout.positions, tf.shape(values)[-1]])


def _transposed(layout, coefficients):
    """`c'(q, o) = c(q + o, -o)` on the grid: the memory gradient's coefficients."""
    window = layout.side * layout.side
    margin = layout.k * layout.stride + layout.k
    extended = tf.reshape(tf.pad(coefficients, [[margin, margin], [0, 0]]), [-1])
    mirrored = np.arange(window)[::-1].copy()[None, :]  # the index of -o
    rows = tf.range(layout.positions)[:, None] + margin + layout.offsets()
    return tf.gather(extended, rows * window + mirrored)


def _banded_align(layout, coefficients, memory):
    """The weighted sum `[B, H, W, D]` with its exact memory gradient."""

    @tf.custom_gradient
    def align(memory):
        # A non-finite memory cell would spread over its whole tile in the products
        # (0 * NaN), so the neighbour tiles read the first finite cell in its place,
        # and the positions whose window holds it get a NaN coefficient, which makes
        # their sum NaN in every channel. Index and coefficient work only, no pass
        # over the memory but the check, and no tf.cond (the exports' converter,
        # tf2onnx, does not map a cond inside the memory's loop).
        good = tf.math.is_finite(tf.reshape(tf.reduce_sum(memory - memory, axis=-1), [-1]))
        # The first finite cell (the last cell if none is: then every window is NaN);
        # a True appended, as argmax refuses an empty map.
        first_good = tf.minimum(
            tf.argmax(tf.concat([tf.cast(good, tf.int32), [1]], 0), output_type=tf.int32),
            tf.maximum(layout.cells - 1, 0))
        cells = layout.neighbour_cells
        finite_cells = tf.where(tf.gather(good, cells), cells, first_good)
        poisoned = tf.where(layout.window_any(~good)[:, None],
                            tf.constant(np.nan, coefficients.dtype), coefficients)
        out = layout.ungrid(_banded_sum(layout, poisoned, memory, finite_cells))

        def grad(upstream):
            # d out(p) / d memory(q) = c(p, q - p): the band transposed.
            transposed = _transposed(layout, coefficients)
            return layout.ungrid(_banded_sum(layout, transposed, upstream, cells))

        return out, grad

    return align(memory)


def _with_channels(features, prev_features):
    """Zero-channel features as one zero channel: the same norms (1e-8), dots (0)
    and so the identity fallback, without reshapes of empty tensors."""
    if features.shape[-1] == 0:
        pad = [[0, 0], [0, 0], [0, 0], [0, 1]]
        return tf.pad(features, pad), tf.pad(prev_features, pad)
    return features, prev_features


def coefficients(features, prev_features, k, tile=None, affinity_power=1.0):
    """The normalised coefficients `[B, H, W, (2k+1)^2]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).
      affinity_power: float > 0. The power of the ReLU'd cosines before the
        normalisation; 1 is the authors' formula. Defaults to 1.0.

    Returns:
      `[B, H, W, (2k+1)^2]`, offset `(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`, zero for
      out-of-map neighbours, a one-hot at the centre where the window's mass is below
      1e-7, NaN by the non-finite rule (module docstring). No gradient.
    """
    check_dtypes(features, prev_features)
    power = check_affinity_power(affinity_power)
    compute = _compute_dtype(features.dtype)
    shape = tf.shape(features)
    layout = _Layout(shape, k, tile_width(k, tile))
    f = tf.cast(tf.stop_gradient(features), compute)
    fp = tf.cast(tf.stop_gradient(prev_features), compute)
    c = layout.ungrid(_normalised(layout, *_with_channels(f, fp), power))
    return tf.cast(tf.stop_gradient(c), features.dtype)


def match_trans(features, prev_features, prev_memory, k, tile=None, affinity_power=1.0):
    """`prev_memory` aligned to `features`: `[B, H, W, D]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      prev_memory: `[B, H, W, D]`, same dtype; the only input with a gradient.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).
      affinity_power: float > 0. As in `coefficients`. Defaults to 1.0.

    Returns:
      `sum_o c(p, o) * prev_memory(p + o)` over the in-map window, `[B, H, W, D]`;
      NaN by the non-finite rule (module docstring).
    """
    check_dtypes(features, prev_features, prev_memory)
    power = check_affinity_power(affinity_power)
    compute = _compute_dtype(features.dtype)
    shape = tf.shape(prev_memory)
    layout = _Layout(shape, k, tile_width(k, tile))
    f = tf.cast(tf.stop_gradient(features), compute)
    fp = tf.cast(tf.stop_gradient(prev_features), compute)
    c = tf.stop_gradient(_normalised(layout, *_with_channels(f, fp), power))
    out = _banded_align(layout, c, tf.cast(prev_memory, compute))
    return tf.cast(out, prev_memory.dtype)


# ----------------------------------------------------------------------------------
# The previous formulation, kept for one release as a reference.


def coefficients_shifted(features, prev_features, k, affinity_power=1.0):
    """As `coefficients` (finite inputs), with 25 shifted elementwise products over
    the padded map."""
    power = check_affinity_power(affinity_power)
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
    if power != 1.0:
        a = tf.pow(a, tf.cast(power, a.dtype))
    mass = tf.reduce_sum(a, axis=-1, keepdims=True)
    identity = tf.one_hot((2 * k + 1) * k + k, (2 * k + 1) ** 2, dtype=compute_dtype)
    use_identity = mass < MIN_MASS
    c = tf.where(use_identity, identity, a / tf.where(use_identity, tf.ones_like(mass), mass))
    return tf.stop_gradient(tf.cast(c, features.dtype))


def match_trans_shifted(features, prev_features, prev_memory, k, affinity_power=1.0):
    """As `match_trans` (finite inputs), with 25 shifted elementwise products over
    the padded map."""
    c = coefficients_shifted(features, prev_features, k, affinity_power)
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
