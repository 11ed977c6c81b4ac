"""A user's functional Keras model with BidirectionalSTMM: fit, save, load elsewhere."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from stmn_tf.layers import STMM, BidirectionalSTMM


def _model(implementation="auto"):
    clips = keras.Input((None, None, None, 4))  # [B, T, H, W, C], any T, H, W
    memory = BidirectionalSTMM(STMM(3, k=1, implementation=implementation))(clips)
    scores = keras.layers.TimeDistributed(keras.layers.Conv2D(1, 1))(memory)
    return keras.Model(clips, scores)


def test_fit_lowers_the_loss(rng):
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="mse")
    clips = rng.normal(size=(8, 3, 5, 5, 4)).astype("float32")
    # A target that needs memory: the running mean over time of the first channel.
    targets = np.cumsum(clips[..., :1], axis=1) / np.arange(1, 4)[None, :, None, None, None]
    history = model.fit(clips, targets, batch_size=4, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_keras_file_round_trip_in_a_fresh_process(tmp_path, rng):
    model = _model()
    inputs = {
        "a": rng.normal(size=(2, 3, 5, 6, 4)).astype("float32"),
        "b": rng.normal(size=(1, 6, 4, 3, 4)).astype("float32"),  # other T, H, W
    }
    path = tmp_path / "model.keras"
    model.save(path)
    for name, clip in inputs.items():
        np.save(tmp_path / f"{name}_in.npy", clip)
        np.save(tmp_path / f"{name}_out.npy", model.predict(clip, verbose=0))
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import stmn_tf.layers  # registers the classes
        model = keras.saving.load_model({str(path)!r})
        layer = model.layers[1]
        assert type(layer).__name__ == "BidirectionalSTMM", type(layer)
        assert layer.k == 1 and layer.filters == 3
        for name in ("a", "b"):
            clip = np.load({str(tmp_path)!r} + f"/{{name}}_in.npy")
            expected = np.load({str(tmp_path)!r} + f"/{{name}}_out.npy")
            got = model.predict(clip, verbose=0)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        print("ROUND TRIP OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROUND TRIP OK" in result.stdout
