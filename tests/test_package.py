"""`import stmn_tf`: registers every Keras class on its own, and imports no TensorFlow.

Each check runs in a fresh Python process: what a module imports is only visible there.
"""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def run(code, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([PYTHON, "-c", code], cwd=cwd, env=env, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_numpy_only_modules_do_not_import_tensorflow():
    modules = [
        "stmn_tf", "stmn_tf.ops.seq_nms", "stmn_tf.ops.tube_linking",
        "stmn_tf.evaluation.vid_eval", "stmn_tf.serving.client",
    ]
    out = run(textwrap.dedent(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    """))
    assert out.strip() == "[]"


def test_import_stmn_tf_registers_every_serialisable_class():
    """Every `stmn_tf>` name in the source is registered after `import stmn_tf, keras`."""
    import re

    names = set()
    for root, _, files in os.walk(os.path.join(REPO, "stmn_tf")):
        for file in files:
            if file.endswith(".py"):
                with open(os.path.join(root, file)) as f:
                    source = f.read()
                names |= set(re.findall(
                    r'register_keras_serializable\(package="stmn_tf"\)\s*\nclass (\w+)', source
                ))
    assert {"BidirectionalSTMM", "STMN", "RFCN", "RPNHead", "BNStar"} <= names
    out = run(textwrap.dedent(f"""
        import stmn_tf, keras
        missing = [n for n in {sorted(names)!r}
                   if keras.saving.get_registered_object("stmn_tf>" + n) is None]
        print(missing)
    """))
    assert out.strip() == "[]"


@pytest.mark.parametrize("first", ["import keras, stmn_tf", "import stmn_tf.layers.stmm, keras"])
def test_registration_whichever_comes_first(first):
    out = run(textwrap.dedent(f"""
        {first}
        import keras
        print(keras.saving.get_registered_object("stmn_tf>STMN").__name__)
    """))
    assert out.strip() == "STMN"


def test_load_model_after_import_stmn_tf_alone(tmp_path):
    """The issue's command, in a fresh process, on a model saved with the layers."""
    run(textwrap.dedent("""
        import keras, numpy as np
        from stmn_tf.layers import STMM, BidirectionalSTMM
        inputs = keras.Input((2, 8, 8, 4))
        outputs = BidirectionalSTMM(STMM(3, k=1, implementation="tf"))(inputs)
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(0).normal(size=(1, 2, 8, 8, 4)).astype("float32")
        np.save("x.npy", x)
        np.save("y.npy", model.predict(x, verbose=0))
        model.save("m.keras")
    """), cwd=tmp_path)
    run("import stmn_tf, keras; keras.saving.load_model('m.keras')", cwd=tmp_path)
    out = run(textwrap.dedent("""
        import stmn_tf, keras, numpy as np
        model = keras.saving.load_model("m.keras")
        y = model.predict(np.load("x.npy"), verbose=0)
        print(type(model.layers[1]).__name__, float(np.abs(y - np.load("y.npy")).max()))
    """), cwd=tmp_path)
    name, error = out.split()
    assert name == "BidirectionalSTMM" and float(error) < 1e-5
