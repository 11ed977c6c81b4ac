"""MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3) in standard TensorFlow ops.

What portable SavedModels and machines without the compiled library run. The same
semantics as the compiled op (the authors' implementation rather than the paper's
Eq. 5): ReLU'd cosine affinities with 1e-8 added to each norm, raised to
`affinity_power` (1, the authors' formula, by default), neighbours outside the map
skipped, normalisation by the in-bounds sum, the memory kept as it is where that sum
(of the powered affinities) is below 1e-7, and no gradient to the features (the
authors'; `feature_gradient=True`, ours and the twin's alone, passes the loss's
gradient to both frames' features through the coefficients as well). With
`offset_prior`, ours and the twin's alone too, each affinity is multiplied by a weight
per window offset, `exp(offset_prior[o])`, before the normalisation.

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

`match_trans` and `coefficients` compute the window as matrix products of 2-D tiles.
The map is cut into tiles of `TILE_ROWS x tile` cells (4 x 8 by default); each tile's
`[32, C]` features are multiplied with the `[C, 96]` previous features of its
neighbour tile (the `(4 + 2k) x (8 + 2k)` cells that hold every window of the tile),
one batched matmul over all tiles, and the window's dot products are read out of
that product with a constant gather. A 2-D tile covers the window's five row
offsets in one product: a row of 8 positions against 12 neighbours per row offset
(the previous layout) reads the features 5 times and the neighbours 7.5 times in
matmuls too small to run near the FLOP rate; a 4 x 8 tile reads the features once
and the neighbours 3 times. The weighted sum of the memory is the same product the
other way round (the `[32, 96]` coefficient matrix of the tile, mostly zero, times
the memory's `[96, D]` neighbour tile), and the memory gradient is that product with
the transposed coefficients `c'(q, o) = c(q + o, -o)`. Neighbours outside the map
(past its edges, in the tiles overhanging it) are masked on the small affinity
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
TILE_ROWS = 4

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


def _band_tables(rows, width, k):
    """Constant tables of the band inside a `[rows*width, (rows+2k)*(width+2k)]` tile
    product.

    Query i = (iy, ix) of a tile meets its neighbour at offset (dy, dx) at neighbour
    j = (iy + dy + k, ix + dx + k) of the neighbour tile, which starts k rows and k
    columns before the tile.

    Returns:
      read: `[rows*width, (2k+1)^2]` int32, flat index `i*N + j` of each window entry
        in the product (N = (rows+2k)*(width+2k)).
      write: `[rows*width, N]` int32, for building the banded matrix from
        `[rows*width, (2k+1)^2]` values flattened with a zero appended: the index of
        entry (i, o) where j is i's neighbour at offset o, `rows*width*(2k+1)^2`
        (the zero) elsewhere.
    """
    side = 2 * k + 1
    span = width + 2 * k
    count = rows * width
    neighbours = (rows + 2 * k) * span
    iy, ix = np.divmod(np.arange(count), width)
    d = np.arange(side)
    read = (np.arange(count)[:, None, None] * neighbours
            + (iy[:, None, None] + d[None, :, None]) * span
            + ix[:, None, None] + d[None, None, :]).reshape(count, side * side)
    jy, jx = np.divmod(np.arange(neighbours), span)
    oy = jy[None, :] - iy[:, None]  # dy + k
    ox = jx[None, :] - ix[:, None]  # dx + k
    inside = (oy >= 0) & (oy < side) & (ox >= 0) & (ox < side)
    write = np.where(inside, np.arange(count)[:, None] * side * side
                     + np.clip(oy, 0, side - 1) * side + np.clip(ox, 0, side - 1),
                     count * side * side)
    return read.astype(np.int32), write.astype(np.int32)


class _Layout:
    """The tiles and index tables of one call (dynamic shapes).

    The map is cut into tiles of `TILE_ROWS x tile` cells (the last ones overhanging
    the map), n tiles in all, in the order (image, tile row, tile column); a
    position is a cell of a tile, `p = t*TILE_ROWS*tile + iy*tile + ix`. Each tile's
    neighbour tile is the `(TILE_ROWS + 2k) x (tile + 2k)` block of cells from k
    rows and columns before it to k after: every window of the tile lies in it. The
    index tables (`position_cells`, `neighbour_cells`, `window_cells`, `in_bounds`,
    `cell_positions`) are built once per call and shared by the coefficients, the
    weighted sum and its gradient. Positions and neighbours outside the map read
    cell 0 (masked, or multiplied by a zero coefficient, or dropped).
    """

    def __init__(self, shape, k, tile):
        self.k = k
        self.rows = TILE_ROWS
        self.tile = tile
        self.side = 2 * k + 1
        self.batch, self.height, self.width = shape[0], shape[1], shape[2]
        self.tile_rows = (self.height + self.rows - 1) // self.rows
        self.tile_cols = (self.width + tile - 1) // tile
        self.n = self.batch * self.tile_rows * self.tile_cols
        self.count = self.rows * tile  # positions per tile
        self.span = (self.rows + 2 * k, tile + 2 * k)
        self.positions = self.n * self.count
        self.cells = self.batch * self.height * self.width  # B*H*W
        self.tables = _band_tables(self.rows, tile, k)

    def _cell(self, image, y, x):
        """The flat cell index of (image, y, x) (broadcast int32 tensors) and whether
        it is inside the map; cell 0 where it is not."""
        inside = (y >= 0) & (y < self.height) & (x >= 0) & (x < self.width)
        cell = (image * self.height + y) * self.width + x
        return tf.where(inside, cell, tf.zeros_like(cell)), inside

    @functools.cached_property
    def _tile_origin(self):
        """`[n]` image, first row and first column of each tile."""
        t = tf.range(self.n)
        image = t // tf.maximum(self.tile_rows * self.tile_cols, 1)
        rest = t - image * self.tile_rows * self.tile_cols
        ty = rest // tf.maximum(self.tile_cols, 1)
        return image, ty * self.rows, (rest - ty * self.tile_cols) * self.tile

    @functools.cached_property
    def _position_yx(self):
        """`[positions]` image, y and x of each position."""
        image, y0, x0 = self._tile_origin
        iy, ix = np.divmod(np.arange(self.count, dtype=np.int32), self.tile)
        return [tf.reshape(a, [-1]) for a in (
            image[:, None] + 0 * iy[None, :], y0[:, None] + iy[None, :], x0[:, None] + ix[None, :])]

    @functools.cached_property
    def position_cells(self):
        """`[positions]` int32: the cell of each position (0 outside the map)."""
        return self._cell(*self._position_yx)[0]

    @functools.cached_property
    def neighbour_cells(self):
        """`[n, (TILE_ROWS+2k)*(tile+2k)]` int32: the cell of each neighbour tile's
        cells (0 outside the map)."""
        image, y0, x0 = self._tile_origin
        jy, jx = np.divmod(np.arange(self.span[0] * self.span[1], dtype=np.int32), self.span[1])
        return self._cell(image[:, None], y0[:, None] - self.k + jy[None, :],
                          x0[:, None] - self.k + jx[None, :])[0]

    @functools.cached_property
    def _window(self):
        image, y, x = self._position_yx
        offsets = np.arange(-self.k, self.k + 1, dtype=np.int32)
        dy = np.repeat(offsets, self.side)[None, :]
        dx = np.tile(offsets, self.side)[None, :]
        cells, inside = self._cell(image[:, None], y[:, None] + dy, x[:, None] + dx)
        centre_inside = (y < self.height) & (x < self.width)
        return cells, inside & centre_inside[:, None]

    @property
    def window_cells(self):
        """`[positions, (2k+1)^2]` int32: the cell of each position's neighbour at each
        window offset (masked by `in_bounds`)."""
        return self._window[0]

    @property
    def in_bounds(self):
        """`[positions, (2k+1)^2]` bool: the position and its neighbour at each offset
        are inside the map."""
        return self._window[1]

    @functools.cached_property
    def cell_positions(self):
        """`[B*H*W]` int32: the position of each cell of the map."""
        cell = tf.range(self.cells)
        image = cell // tf.maximum(self.height * self.width, 1)
        rest = cell - image * self.height * self.width
        y = rest // tf.maximum(self.width, 1)
        x = rest - y * self.width
        t = (image * self.tile_rows + y // self.rows) * self.tile_cols + x // self.tile
        return t * self.count + (y % self.rows) * self.tile + x % self.tile

    def window_any(self, flags):
        """`[positions]` bool: a flagged cell in the in-bounds window of each position.

        `flags`: `[B*H*W]` bool, one per cell of the map.
        """
        return tf.reduce_any(tf.gather(flags, self.window_cells) & self.in_bounds, axis=-1)

    def ungrid(self, values):
        """`[positions, D]` -> `[B, H, W, D]`."""
        cells = tf.gather(values, self.cell_positions)
        return tf.reshape(cells, [self.batch, self.height, self.width, tf.shape(values)[-1]])


def _norm_plus_epsilon(x, differentiable=False):
    """`[N, C]` -> `[N]`: the L2 norm plus NORM_EPSILON, computed at NORM_SCALE.

    `differentiable`: a zero vector's norm gets gradient 0 instead of sqrt's NaN
    (the same values).
    """
    squares = tf.reduce_sum(tf.square(x), axis=-1)
    if differentiable:
        positive = squares > 0
        norm = tf.where(positive, tf.sqrt(tf.where(positive, squares, tf.ones_like(squares))),
                        squares)
    else:
        norm = tf.sqrt(squares)
    return (norm * NORM_SCALE + NORM_SCALE * NORM_EPSILON) / NORM_SCALE


def _banded_dots(layout, queries, neighbours):
    """`[positions, (2k+1)^2]`: `<queries(p), neighbours(p + o)>` for every position p
    and window offset o (any value outside the map: the caller masks it).

    `queries`, `neighbours`: `[B*H*W, C]`, one row per cell of the map.
    """
    read, _ = layout.tables
    tiles = tf.reshape(tf.gather(queries, layout.position_cells),
                       [layout.n, layout.count, tf.shape(queries)[-1]])
    blocks = tf.gather(neighbours, layout.neighbour_cells)  # [n, N, C]
    # Every dot product of the window, and more: [tile cells, C] x [C, neighbour cells].
    product = tf.matmul(tiles, blocks, transpose_b=True)
    product = tf.reshape(product, [layout.n, layout.count * layout.span[0] * layout.span[1]])
    dots = tf.gather(product, read, axis=1)  # [n, count, side^2]
    return tf.reshape(dots, [layout.positions, layout.side * layout.side])


def _normalised(layout, features, prev_features, affinity_power, differentiable=False,
                offset_prior=None):
    """The coefficients of the positions, `[positions, (2k+1)^2]`, in the compute dtype.

    `features`, `prev_features`: `[B, H, W, C]` in the compute dtype. NaN at the
    in-bounds offsets of positions whose window has a non-finite feature norm.
    `differentiable`: finite gradients to the features where the values have kinks
    (zero norms, `0 ** p` for p < 1); the same values. `offset_prior`: None or
    `[(2k+1)^2]` log-weights in the compute dtype, one per offset: the affinities are
    multiplied by their exponentials before the normalisation (differentiable).
    """
    side = layout.side
    flat = tf.reshape(features, [-1, tf.shape(features)[-1]])  # [B*H*W, C]
    prev_flat = tf.reshape(prev_features, [-1, tf.shape(prev_features)[-1]])
    dots = _banded_dots(layout, flat, prev_flat)
    norm = tf.gather(_norm_plus_epsilon(flat, differentiable), layout.position_cells)
    neighbour_norm = tf.gather(_norm_plus_epsilon(prev_flat, differentiable),
                               layout.window_cells)
    cosine = dots / (norm[:, None] * neighbour_norm)
    in_bounds = layout.in_bounds
    a = tf.where(in_bounds, tf.nn.relu(cosine), tf.zeros_like(cosine))
    if affinity_power != 1.0:  # 1: the authors' numbers, no pow
        power = tf.cast(affinity_power, a.dtype)
        if differentiable:
            positive = a > 0
            a = tf.where(positive, tf.pow(tf.where(positive, a, tf.ones_like(a)), power), a)
        else:
            a = tf.pow(a, power)
    if offset_prior is not None:
        a = a * tf.exp(offset_prior)[None, :]
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
    `[B, H, W, D]`, `cells` the neighbour tiles' cells (`neighbour_cells`, pointing
    at finite values only, as the zero coefficients multiply them).
    """
    _, write = layout.tables
    neighbours = tf.gather(tf.reshape(values, [-1, tf.shape(values)[-1]]), cells)  # [n, N, D]
    z = tf.reshape(coefficients, [layout.n, layout.count * layout.side * layout.side])
    z = tf.pad(z, [[0, 0], [0, 1]])  # the zero that `write` points at
    banded = tf.gather(z, write, axis=1)  # [n, count, N]
    return tf.reshape(tf.matmul(banded, neighbours), [layout.positions, tf.shape(values)[-1]])


def _transposed(layout, coefficients):
    """`c'(q, o) = c(q + o, -o)`: the memory gradient's coefficients, `[positions,
    (2k+1)^2]`, zero where q + o is outside the map."""
    window = layout.side * layout.side
    mirrored = np.arange(window, dtype=np.int32)[::-1].copy()[None, :]  # the index of -o
    source = tf.gather(layout.cell_positions, layout.window_cells) * window + mirrored
    values = tf.gather(tf.reshape(coefficients, [-1]), source)
    return tf.where(layout.in_bounds, values, tf.zeros_like(values))


def _banded_align(layout, coefficients, memory, coefficient_gradient=False):
    """The weighted sum `[B, H, W, D]` with its exact memory gradient, and with
    `coefficient_gradient` the coefficients' as well."""

    def weighted_sum(coefficients, memory):
        # A non-finite memory cell would spread over its whole tile in the products
        # (0 * NaN), so the neighbour tiles read the first finite cell in its place,
        # and the positions whose window holds it get a NaN coefficient, which makes
        # their sum NaN in every channel. Index and coefficient work only, no pass
        # over the memory but the check, and no tf.cond (the exports' converter,
        # tf2onnx, does not map a cond inside the memory's loop).
        good = tf.reshape(tf.reduce_all(tf.math.is_finite(memory), axis=-1), [-1])
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

        def memory_grad(upstream):
            # d out(p) / d memory(q) = c(p, q - p): the band transposed.
            transposed = _transposed(layout, coefficients)
            return layout.ungrid(_banded_sum(layout, transposed, upstream, cells))

        def coefficients_grad(upstream):
            # d out(p) / d c(p, o) = memory(p + o): the window's dot products of the
            # upstream gradient with the memory, zero outside the map.
            depth = tf.shape(memory)[-1]
            dots = _banded_dots(layout, tf.reshape(upstream, [-1, depth]),
                                tf.reshape(memory, [-1, depth]))
            return tf.where(layout.in_bounds, dots, tf.zeros_like(dots))

        return out, memory_grad, coefficients_grad

    if coefficient_gradient:
        @tf.custom_gradient
        def align_both(coefficients, memory):
            out, memory_grad, coefficients_grad = weighted_sum(coefficients, memory)
            return out, lambda upstream: (coefficients_grad(upstream), memory_grad(upstream))

        return align_both(coefficients, memory)

    @tf.custom_gradient
    def align(memory):
        out, memory_grad, _ = weighted_sum(coefficients, memory)
        return out, memory_grad

    return align(memory)


def _with_channels(features, prev_features):
    """Zero-channel features as one zero channel: the same norms (1e-8), dots (0)
    and so the identity fallback, without reshapes of empty tensors."""
    if features.shape[-1] == 0:
        pad = [[0, 0], [0, 0], [0, 0], [0, 1]]
        return tf.pad(features, pad), tf.pad(prev_features, pad)
    return features, prev_features


def check_offset_prior(offset_prior, k, dtype):
    """`offset_prior` (None, or any float tensor-like of `(2k+1)^2` values) as a 1-D
    tensor of `dtype` (None stays None).

    Raises:
      ValueError: naming the expected size, when it has another number of values.
    """
    if offset_prior is None:
        return None
    prior = tf.convert_to_tensor(offset_prior)
    if not prior.dtype.is_floating:
        raise TypeError(f"MatchTrans: offset_prior must be float, got {prior.dtype.name}")
    size = (2 * k + 1) ** 2
    if prior.shape.rank != 1 or (prior.shape[0] is not None and prior.shape[0] != size):
        raise ValueError(f"MatchTrans: offset_prior must have shape [(2k+1)^2] = [{size}] "
                         f"for k = {k}, got {prior.shape}")
    return tf.cast(prior, dtype)


def coefficients(features, prev_features, k, tile=None, affinity_power=1.0, offset_prior=None):
    """The normalised coefficients `[B, H, W, (2k+1)^2]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).
      affinity_power: float > 0. The power of the ReLU'd cosines before the
        normalisation; 1 is the authors' formula. Defaults to 1.0.
      offset_prior: None (the authors' formula) or `[(2k+1)^2]` float log-weights,
        one per offset in the coefficients' order: each affinity is multiplied by
        `exp(offset_prior[o])` before the normalisation.

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
    prior = check_offset_prior(offset_prior, k, compute)
    prior = None if prior is None else tf.stop_gradient(prior)
    c = layout.ungrid(_normalised(layout, *_with_channels(f, fp), power, offset_prior=prior))
    return tf.cast(tf.stop_gradient(c), features.dtype)


def match_trans(features, prev_features, prev_memory, k, tile=None, affinity_power=1.0,
                feature_gradient=False, offset_prior=None):
    """`prev_memory` aligned to `features`: `[B, H, W, D]`, in the inputs' dtype.

    Args:
      features: float `[B, H, W, C]`, frame t.
      prev_features: `[B, H, W, C]`, frame t-1, same dtype.
      prev_memory: `[B, H, W, D]`, same dtype; the only input with a gradient unless
        `feature_gradient`.
      k: int >= 0. The window radius.
      tile: int or None. Positions per tile (see `tile_width`).
      affinity_power: float > 0. As in `coefficients`. Defaults to 1.0.
      feature_gradient: bool. Also differentiate through the coefficients, to
        `features` and `prev_features` (the authors stop it there). The same values.
        Defaults to False.
      offset_prior: None or `[(2k+1)^2]` log-weights, as in `coefficients`; it
        gets the loss's gradient through the coefficients (whatever
        `feature_gradient`).

    Returns:
      `sum_o c(p, o) * prev_memory(p + o)` over the in-map window, `[B, H, W, D]`;
      NaN by the non-finite rule (module docstring).
    """
    check_dtypes(features, prev_features, prev_memory)
    power = check_affinity_power(affinity_power)
    compute = _compute_dtype(features.dtype)
    shape = tf.shape(prev_memory)
    layout = _Layout(shape, k, tile_width(k, tile))
    if not feature_gradient:  # the authors': the coefficients are constants
        features, prev_features = tf.stop_gradient(features), tf.stop_gradient(prev_features)
    f, fp = _with_channels(tf.cast(features, compute), tf.cast(prev_features, compute))
    prior = check_offset_prior(offset_prior, k, compute)
    c = _normalised(layout, f, fp, power, differentiable=feature_gradient, offset_prior=prior)
    out = _banded_align(layout, c, tf.cast(prev_memory, compute),
                        coefficient_gradient=feature_gradient or prior is not None)
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
