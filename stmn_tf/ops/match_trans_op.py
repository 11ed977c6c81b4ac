"""MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3): the compiled op, and the dispatch to
its pure-TF twin (match_trans_tf.py).

Both follow the authors' implementation, which differs from the paper's
Eq. 5 in three ways: the affinity is the cosine, not the raw dot product; it is ReLU'd
before normalisation; and neighbours outside the map are skipped rather than zero
padded, with the memory kept as it is where the window's affinities sum below 1e-7.
Like the authors' code, by default no gradient flows into the features through the
coefficients: only the memory is differentiated.

`affinity_power` p is an option of ours, not the authors': the coefficients become

    a(p, q) = max(0, cos(F_t(p), F_{t-1}(q)))^p,   c(p, q) = a(p, q) / sum_q a(p, q)

(identity where that sum of powered affinities is below 1e-7). With non-negative
(ReLU'd) features every cosine is positive and, for p = 1 (the authors' formula and
the default), the window's coefficients come out nearly uniform: a box blur of the
memory rather than an alignment. A power p > 1 keeps the order of the affinities and
concentrates the weight on the best matches.

`centre_features`, also ours: the cosine reads each frame's features minus their mean
over the frame's positions, `F_t(p) - mean_q F_t(q)` (and the same for `F_{t-1}` with
its own mean), so that what every position shares (all of it positive after a ReLU)
no longer makes every pair alike; cosines of centred features are negative for
dissimilar positions, and the ReLU removes them. Centring is standard TensorFlow
around either implementation. A non-finite feature anywhere in a frame then makes its
mean, and so every position's output, NaN.

`feature_gradient`, also ours and the pure-TF twin's alone: the loss's gradient
reaches both frames' features through the coefficients as well (the authors, and the
compiled op, differentiate the memory only), so that the features can learn to match;
the values are the same. It needs `implementation="tf"` (or `"auto"`, which then takes
the twin): the compiled op refuses it with a ValueError.

`offset_prior`, also ours and the twin's alone: `[(2k+1)^2]` log-weights, one per
window offset, that multiply the affinities before the normalisation,

    c(p, p + o) = a(p, p + o) * exp(b_o) / sum_o' a(p, p + o') * exp(b_o'),

and that the loss differentiates (the memory cells learn them, `offset_prior=True`).
With b = 0 it is the formula above. A learned prior on where the match lies: where
the features do not tell the true match from its neighbours (a slowly moving object
looks like the cells around it), the authors' coefficients spread the memory over
the window at every frame; the prior lets training learn how far the data's objects
move between frames. The compiled op has no such input: `"auto"` takes the twin,
`"custom_op"` is refused.

Odd input, the same in both implementations: NaN or Inf in a position's window gives
NaN in that position's output (the exact rule is in match_trans_tf's docstring); zero
feature channels give the identity fallback; non-float or mismatched dtypes are
refused with a TypeError naming the argument.

Shapes (NHWC): features and prev_features `[B, H, W, C]`, prev_memory `[B, H, W, D]`,
coefficients `[B, H, W, (2k+1)^2]` with offset `(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`.
"""

import os
import threading
import warnings

import tensorflow as tf

from stmn_tf.ops import match_trans_self_check
from stmn_tf.ops import match_trans_tf

_LIBRARY_NAME = "_match_trans_ops.so"
_LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY_NAME)
_REBUILD_HINT = (
    "Rebuild it with `make install` (or `python custom_ops/build.py --force`) against the "
    "TensorFlow that is installed now, or pass implementation='tf' to use the pure-TF "
    "implementation."
)

_lock = threading.Lock()
_library = None
_load_error = None
_warned = False

IMPLEMENTATIONS = ("auto", "custom_op", "tf")


class OpLibraryError(RuntimeError):
    """The compiled MatchTrans library is missing or does not load."""


def load_library():
    """Loads the compiled op library once and returns its module.

    Raises:
      OpLibraryError: if the library is missing or fails to load (for example when
        it was built against another TensorFlow), with how to rebuild it.
    """
    global _library, _load_error
    with _lock:
        if _library is not None:
            return _library
        if _load_error is not None:
            raise OpLibraryError(_load_error)
        if not os.path.exists(_LIBRARY_PATH):
            _load_error = f"The MatchTrans op library {_LIBRARY_PATH} is missing. {_REBUILD_HINT}"
            raise OpLibraryError(_load_error)
        try:
            _library = tf.load_op_library(_LIBRARY_PATH)
        except (tf.errors.NotFoundError, OSError) as e:
            _load_error = (
                f"The MatchTrans op library {_LIBRARY_PATH} failed to load ({e}); it was "
                f"probably built against another TensorFlow (now {tf.__version__}). "
                f"{_REBUILD_HINT}"
            )
            raise OpLibraryError(_load_error) from e
        return _library


def custom_op_available():
    """True when the compiled op library loads."""
    try:
        load_library()
        return True
    except OpLibraryError:
        return False


def _resolve(implementation):
    global _warned
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
        )
    if implementation == "auto":
        if custom_op_available():
            return "custom_op"
        if not _warned:
            _warned = True
            warnings.warn(
                f"MatchTrans: {_load_error} Using the pure-TF implementation.",
                RuntimeWarning,
                stacklevel=3,
            )
        return "tf"
    return implementation


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"MatchTrans: k must be an integer >= 0, got {k!r}")


def _check_centre(centre_features):
    if not isinstance(centre_features, bool):
        raise ValueError(f"MatchTrans: centre_features must be True or False, got "
                         f"{centre_features!r}")
    return centre_features


def _check_twin_flag(name, value, implementation, missing):
    """Refuses a non-bool flag `name`, and True with the compiled op, which `missing`
    (what the op lacks). Loads nothing (the layers call it at construction)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    if value and implementation == "custom_op":
        raise ValueError(f"{name}=True needs implementation='tf' or 'auto': the compiled "
                         f"MatchTrans op {missing}")
    return value


def check_feature_gradient(feature_gradient, implementation):
    """The `feature_gradient` flag, checked; returns it."""
    return _check_twin_flag("feature_gradient", feature_gradient, implementation,
                            "passes no gradient to the features")


def check_learned_offset_prior(offset_prior, implementation):
    """The layers' `offset_prior` flag, checked; returns it."""
    return _check_twin_flag("offset_prior", offset_prior, implementation, "has no offset prior")


def check_offset_prior(offset_prior, implementation):
    """Refuses an offset prior with the compiled op (which has no such input); returns
    whether one is given."""
    if offset_prior is not None and implementation == "custom_op":
        raise ValueError("MatchTrans: offset_prior needs implementation='tf' or 'auto': the "
                         "compiled MatchTrans op has no offset prior")
    return offset_prior is not None


def _fmt(shape):
    """A shape as the kernel prints it: [4,5,3], with ? for unknown dimensions."""
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _check_inputs(features, prev_features, prev_memory=None):
    """Static checks with the same messages as the kernel; dynamic dims pass through."""
    named = [("features", features), ("prev_features", prev_features)]
    if prev_memory is not None:
        named.append(("prev_memory", prev_memory))
    for name, t in named:
        if t.shape.rank is not None and t.shape.rank != 4:
            raise ValueError(
                f"MatchTrans: {name} must be rank 4 [B, H, W, C], got shape {_fmt(t.shape)}"
            )
    shapes = [t.shape for _, t in named]
    if all(s.rank == 4 for s in shapes):
        bhw = shapes[0][:3]
        for s in shapes[1:]:
            if not bhw.is_compatible_with(s[:3]):
                raise ValueError(
                    "MatchTrans: features, prev_features and prev_memory must agree in "
                    f"batch, height and width, got {', '.join(_fmt(s) for s in shapes)}"
                )
        if not shapes[0][3:].is_compatible_with(shapes[1][3:]):
            raise ValueError(
                "MatchTrans: features and prev_features must have the same depth, got "
                f"{_fmt(shapes[0])} and {_fmt(shapes[1])}"
            )


def _convert(features, prev_features, prev_memory=None):
    """Tensors of their own dtypes (no silent cast), checked as the op's kernels."""
    features = tf.convert_to_tensor(features)
    prev_features = tf.convert_to_tensor(prev_features)
    if prev_memory is not None:
        prev_memory = tf.convert_to_tensor(prev_memory)
    match_trans_tf.check_dtypes(features, prev_features, prev_memory)
    return features, prev_features, prev_memory


# ----------------------------------------------------------------------------------
# The compiled op.


def _op_match_trans(features, prev_features, prev_memory, k, affinity_power):
    library = load_library()
    match_trans_self_check.ensure_checked()  # the op's first use on each GPU
    aligned, _ = library.stmn_match_trans(features, prev_features, prev_memory, k=k,
                                          affinity_power=affinity_power)
    return aligned


@tf.RegisterGradient("Stmn>MatchTrans")
def _match_trans_grad(op, grad_aligned, grad_coefficients):
    """Exact gradient for prev_memory; none for the features (as the authors)."""
    del grad_coefficients  # the coefficients carry no gradient to the features
    k = op.get_attr("k")
    grad_memory = load_library().stmn_match_trans_grad(op.outputs[1], grad_aligned, k=k)
    return [None, None, grad_memory]


# ----------------------------------------------------------------------------------
# Public API.


def centred(features):
    """`[B, H, W, C]` minus its mean over the H x W positions (module docstring)."""
    return features - tf.reduce_mean(features, axis=[1, 2], keepdims=True)


def match_trans(features, prev_features, prev_memory, k=2, implementation="auto",
                affinity_power=1.0, centre_features=False, feature_gradient=False,
                offset_prior=None):
    """Aligns `prev_memory` to `features` with MatchTrans.

    Args:
      features: float `[B, H, W, C]`, the features of frame t.
      prev_features: `[B, H, W, C]`, the features of frame t-1.
      prev_memory: `[B, H, W, D]`, the memory after frame t-1.
      k: int. The window radius; the window is (2k+1) x (2k+1). Defaults to 2.
      implementation: `"custom_op"` (the compiled C++/CUDA op), `"tf"` (standard
        TensorFlow ops, XLA-compilable, used for portable SavedModels) or `"auto"`
        (the op when its library loads, else `"tf"` with a warning). Defaults to
        `"auto"`.
      affinity_power: float, finite and > 0. The power of the ReLU'd cosines before
        the normalisation (module docstring); 1.0, the default, is the authors'
        formula. Held as float32, as the op's attr.
      centre_features: bool. Centre each frame's features over its positions before
        the cosine (module docstring). Defaults to False, the authors' formula.
      feature_gradient: bool. Differentiate through the coefficients to both frames'
        features too (module docstring; the twin only). Defaults to False, the
        authors' memory-only gradient.
      offset_prior: None (the default, the authors' formula) or float `[(2k+1)^2]`,
        log-weights per window offset in the coefficients' order (module
        docstring; the twin only), differentiated by the loss.

    Returns:
      The aligned memory, `[B, H, W, D]`, same dtype as the inputs.

    Raises:
      ValueError: bad k, affinity_power, offset_prior or shapes, or feature_gradient
        or offset_prior with implementation="custom_op". TypeError: bad dtypes.
    """
    _check_k(k)
    power = match_trans_tf.check_affinity_power(affinity_power)
    features, prev_features, prev_memory = _convert(features, prev_features, prev_memory)
    _check_inputs(features, prev_features, prev_memory)
    centre = _check_centre(centre_features)
    twin_only = check_feature_gradient(feature_gradient, implementation)
    twin_only = check_offset_prior(offset_prior, implementation) or twin_only
    if twin_only and implementation == "auto":
        implementation = "tf"  # the only implementation with that gradient or prior
    implementation = _resolve(implementation)
    if centre:
        features, prev_features = centred(features), centred(prev_features)
    if implementation == "custom_op":
        return _op_match_trans(features, prev_features, prev_memory, k, power)
    return match_trans_tf.match_trans(features, prev_features, prev_memory, k,
                                      affinity_power=power, feature_gradient=feature_gradient,
                                      offset_prior=offset_prior)


def match_trans_coefficients(features, prev_features, k=2, implementation="tf",
                             affinity_power=1.0, centre_features=False, offset_prior=None):
    """The normalised MatchTrans coefficients.

    Args:
      features: float `[B, H, W, C]`.
      prev_features: `[B, H, W, C]`.
      k: int. The window radius. Defaults to 2.
      implementation: as in `match_trans`. Defaults to `"tf"`.
      affinity_power: as in `match_trans`. Defaults to 1.0.
      centre_features: as in `match_trans`. Defaults to False.
      offset_prior: as in `match_trans` (no gradient here). Defaults to None.

    Returns:
      `[B, H, W, (2k+1)^2]`: for each position, the ReLU'd cosine affinities to the
      in-bounds neighbours, raised to `affinity_power`, normalised to sum 1, offset
      `(dy, dx)` at index `(dy+k)*(2k+1) + (dx+k)`, zero for out-of-bounds
      neighbours; a one-hot at the centre where the powered affinities sum below 1e-7
      (the identity fallback).
    """
    _check_k(k)
    power = match_trans_tf.check_affinity_power(affinity_power)
    features, prev_features, _ = _convert(features, prev_features)
    _check_inputs(features, prev_features)
    if _check_centre(centre_features):
        features, prev_features = centred(features), centred(prev_features)
    if check_offset_prior(offset_prior, implementation) and implementation == "auto":
        implementation = "tf"
    if _resolve(implementation) == "custom_op":
        match_trans_self_check.ensure_checked()
        memory = tf.zeros(tf.concat([tf.shape(features)[:3], [0]], 0), features.dtype)
        _, coefficients = load_library().stmn_match_trans(
            features, prev_features, memory, k=k, affinity_power=power
        )
        return tf.stop_gradient(coefficients)
    return match_trans_tf.coefficients(features, prev_features, k, affinity_power=power,
                                       offset_prior=offset_prior)
