"""stmn-tf: Spatial-Temporal Memory Networks for video object detection (Xiao & Lee, ECCV 2018).

    import stmn_tf, keras
    model = keras.saving.load_model("m.keras")   # a model saved with stmn_tf's layers

`import stmn_tf` is cheap and imports no TensorFlow: the subpackages (`stmn_tf.layers`,
`stmn_tf.models`, ...) load on first attribute access, so that the NumPy-only modules
(`stmn_tf.ops.seq_nms`, `stmn_tf.ops.tube_linking`, `stmn_tf.evaluation.vid_eval`,
`stmn_tf.serving.client`) stay free of TensorFlow.

Keras finds a saved object's class by its registered name (`stmn_tf>BidirectionalSTMM`,
from `keras.saving.register_keras_serializable(package="stmn_tf")`) in a registry that
the decorators fill when the defining modules are imported. So every serialisable class
is registered as soon as Keras is there: at once if Keras is already imported, otherwise
right after the first `import keras` completes (an import hook on `sys.meta_path`,
`register_keras_objects`). When that import happens inside an import of one of our own
modules (`stmn_tf/layers/bn_star.py` importing keras), the registration waits until that
outermost `stmn_tf.*` import has finished, so that it never re-enters a half-imported
module.
"""

import importlib
import importlib.abc
import sys
import threading

__version__ = "0.1.0"

_SUBPACKAGES = ("data", "evaluation", "inference", "layers", "models", "ops", "serving", "training")
_SUBMODULES = ("ablation", "cli", "configs", "demo", "variants")
# The modules whose import registers every `stmn_tf>...` class: the layers, the
# models (RPN, heads, backbone, detectors) and the learning-rate schedule.
_SERIALISABLE_MODULES = ("stmn_tf.layers", "stmn_tf.models", "stmn_tf.training.optimization")

__all__ = sorted(_SUBPACKAGES + _SUBMODULES) + ["register_keras_objects"]

_lock = threading.RLock()
_registered = False
_importing = 0  # depth of `stmn_tf.*` imports in progress (through _KerasWatcher)


def register_keras_objects():
    """Imports the modules that register every serialisable stmn_tf class with Keras.

    Runs once; imports TensorFlow and Keras. Called automatically (see the module
    docstring), so a user never needs it.
    """
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
        for name in _SERIALISABLE_MODULES:
            importlib.import_module(name)


class _WrappedLoader(importlib.abc.Loader):
    """Runs a module through its own loader, then `after(name)`."""

    def __init__(self, loader, before, after):
        self.loader = loader
        self.before = before
        self.after = after

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.before(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            self.after(module.__name__)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


class _KerasWatcher(importlib.abc.MetaPathFinder):
    """Registers stmn_tf's Keras objects after `keras` is imported (see the docstring)."""

    def find_spec(self, fullname, path, target=None):
        if _registered or not (fullname == "keras" or fullname.startswith("stmn_tf.")):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WrappedLoader(spec.loader, self._before, self._after)
        return spec

    @staticmethod
    def _before(name):
        global _importing
        if name != "keras":
            with _lock:
                _importing += 1

    @staticmethod
    def _after(name):
        global _importing
        with _lock:
            if name != "keras":
                _importing -= 1
            ready = _importing == 0 and "keras" in sys.modules and not _registered
        if ready:
            register_keras_objects()


def __getattr__(name):
    if name in _SUBPACKAGES or name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(finder, _KerasWatcher) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasWatcher())
