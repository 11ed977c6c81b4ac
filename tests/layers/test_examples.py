"""The README's layer example and the layers' docstring examples run as written."""

import pathlib
import re
import textwrap

import numpy as np
import pytest

import stmn_tf.layers

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
LAYERS = ["BNStar", "MatchTrans", "STMMCell", "ConvGRUCell", "STMM", "ConvGRU",
          "BidirectionalSTMM"]


def _python_blocks(text):
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]


def test_readme_layers_example(tmp_path, monkeypatch, capsys):
    readme = README.read_text()
    start = readme.index("## Use the layers in your own Keras model")
    end = readme.index("\n## ", start + 1)
    blocks = _python_blocks(readme[start:end])
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # the example writes video_model.keras
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert (tmp_path / "video_model.keras").exists()
    assert capsys.readouterr().out.strip() == "(2, 3, 4, 6, 3)"


@pytest.mark.parametrize("name", LAYERS)
def test_docstring_example(name):
    doc = getattr(stmn_tf.layers, name).__doc__
    for section in ("Args:", "Call arguments:", "Returns:", "Example:"):
        assert section in doc, f"{name}'s docstring has no {section}"
    blocks = _python_blocks(doc)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], f"{name} docstring", "exec"), namespace)
    # Each example leaves a result whose shape its comment states.
    result = next(namespace[k] for k in ("gates", "aligned", "memory") if k in namespace)
    expected = {
        "BNStar": (2, 8, 8, 16), "MatchTrans": (1, 6, 6, 4),
        "STMMCell": (2, 3, 8, 8, 4), "ConvGRUCell": (2, 3, 8, 8, 4),
        "STMM": (None, None, None, None, 8), "ConvGRU": (None, None, None, None, 8),
        "BidirectionalSTMM": (None, None, None, None, 16),
    }[name]
    assert tuple(np.shape(result) if not hasattr(result, "shape") else result.shape) == expected
