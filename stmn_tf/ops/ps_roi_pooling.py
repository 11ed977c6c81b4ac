"""Position-sensitive RoI average pooling (R-FCN, Dai et al. 2016), in pure TensorFlow.

The caffe kernel of R-FCN loops over output bins; here every bin's sum is read from
an integral image (4 gathers per bin), which is exact, has static shapes, compiles
with XLA and differentiates through `cumsum` and `gather_nd`.

Bins follow R-FCN's `psroi_pooling_layer`: for a RoI from `start` to `end` in
feature-map coordinates (size at least 0.1), bin `i` of `K` covers the cells
`floor(start + i * size / K)` to `ceil(start + (i + 1) * size / K)` (exclusive),
clipped to the map; an empty bin averages to 0. R-FCN rounds the RoI to whole
pixels and adds 1 to its end (inclusive pixel boxes); our boxes are continuous
normalised coordinates, so neither is done.

Channel layout follows R-FCN too: output channel `d` of bin `(i, j)` reads input
channel `(d * K + i) * K + j` (class-major).
"""

import tensorflow as tf


def ps_roi_bin_edges(start, end, bins, size):
    """Integer cell ranges of the bins along one axis.

    Args:
      start, end: `[...]` float RoI edges in feature-map cells.
      bins: K.
      size: the map's size along this axis (int or scalar tensor).

    Returns:
      Two `[..., K]` int32 tensors: first cell, one past the last cell.
    """
    length = tf.maximum(end - start, 0.1)
    step = length / float(bins)
    index = tf.range(bins, dtype=start.dtype)
    lo = tf.floor(start[..., None] + index * step[..., None])
    hi = tf.math.ceil(start[..., None] + (index + 1.0) * step[..., None])
    size = tf.cast(size, start.dtype)
    lo = tf.clip_by_value(lo, 0.0, size)
    hi = tf.clip_by_value(hi, 0.0, size)
    return tf.cast(lo, tf.int32), tf.cast(hi, tf.int32)


def ps_roi_average_pool(score_maps, rois, bins, output_channels):
    """Position-sensitive RoI average pooling.

    Args:
      score_maps: `[N, H, W, output_channels * bins * bins]`, channel
        `(d * bins + i) * bins + j` for output channel `d` of bin `(i, j)`.
      rois: `[N, R, 4]` ymin, xmin, ymax, xmax in feature-map cells (continuous;
        a box in pixels divided by the stride).
      bins: K, bins per side.
      output_channels: D.

    Returns:
      `[N, R, K, K, D]` the average of each bin's own channel group over the bin.
    """
    score_maps = tf.convert_to_tensor(score_maps)
    dtype = score_maps.dtype
    # Sums in float32 (float64 stays float64) so that half-precision maps stay exact.
    work = tf.float64 if dtype == tf.float64 else tf.float32
    maps = tf.cast(score_maps, work)
    rois = tf.cast(rois, work)
    shape = tf.shape(maps)
    n, height, width = shape[0], shape[1], shape[2]
    num_rois = tf.shape(rois)[1]
    # [N, H, W, D, K*K] -> [N, H, W, K*K, D] so that one gather picks a bin's group.
    maps = tf.reshape(maps, [n, height, width, output_channels, bins * bins])
    maps = tf.transpose(maps, [0, 1, 2, 4, 3])
    integral = tf.cumsum(tf.cumsum(maps, axis=1), axis=2)
    integral = tf.pad(integral, [[0, 0], [1, 0], [1, 0], [0, 0], [0, 0]])  # [N, H+1, W+1, K*K, D]

    y0, y1 = ps_roi_bin_edges(rois[..., 0], rois[..., 2], bins, height)  # [N, R, K]
    x0, x1 = ps_roi_bin_edges(rois[..., 1], rois[..., 3], bins, width)

    batch = tf.broadcast_to(tf.range(n)[:, None, None, None], [n, num_rois, bins, bins])
    group = tf.reshape(tf.range(bins * bins), [1, 1, bins, bins])
    group = tf.broadcast_to(group, [n, num_rois, bins, bins])

    def corner(ys, xs):
        ys = tf.broadcast_to(ys[..., :, None], [n, num_rois, bins, bins])
        xs = tf.broadcast_to(xs[..., None, :], [n, num_rois, bins, bins])
        index = tf.stack([batch, ys, xs, group], axis=-1)  # [N, R, K, K, 4]
        return tf.gather_nd(integral, index)  # [N, R, K, K, D]

    total = corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)
    area = (y1 - y0)[..., :, None] * (x1 - x0)[..., None, :]  # [N, R, K, K]
    area = tf.cast(area, work)[..., None]
    pooled = tf.math.divide_no_nan(total, area)
    return tf.cast(pooled, dtype)
