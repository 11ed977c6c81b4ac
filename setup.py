"""stmn-tf: Spatial-Temporal Memory Networks for video object detection in TF 2 / Keras 3.

`pip install -e '.[test]'` installs the Python package; `python setup.py build_ops`
(run by `make install`) compiles the custom ops against the installed TensorFlow,
see custom_ops/build.py. Non-editable builds compile them as part of build_py when
TensorFlow is importable in the build environment.
"""

import os
import runpy
import sys

from setuptools import Command
from setuptools import find_packages
from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT_REQUIRES = ["tf2onnx==1.17.0", "onnx==1.23.2", "onnxruntime==1.32.0"]


def _build_ops(force=False, use_cuda=True):
    build = runpy.run_path(os.path.join(HERE, "custom_ops", "build.py"))
    for line in build["build_all"](use_cuda=use_cuda, force=force):
        print(line)


class BuildOps(Command):
    """Compiles custom_ops/ into stmn_tf/ops/*.so (CPU, and CUDA when nvcc is found)."""

    description = "build the MatchTrans custom op library"
    user_options = [
        ("force", "f", "rebuild even if up to date"),
        ("no-cuda", None, "skip the CUDA kernels"),
    ]
    boolean_options = ["force", "no-cuda"]

    def initialize_options(self):
        self.force = False
        self.no_cuda = False

    def finalize_options(self):
        pass

    def run(self):
        build = runpy.run_path(os.path.join(HERE, "custom_ops", "build.py"))
        try:
            _build_ops(force=self.force, use_cuda=not self.no_cuda)
        except build["BuildError"] as e:
            sys.exit(f"error: {e}")


class BuildPyWithOps(build_py):
    """Builds the ops too when TensorFlow is present (skipped in isolated builds)."""

    def run(self):
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            print("TensorFlow not importable here: run `python setup.py build_ops` later.")
        else:
            _build_ops()
        super().run()


setup(
    name="stmn-tf",
    version="0.1.0",
    description="Spatial-Temporal Memory Networks for video object detection (TF2/Keras 3)",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["stmn_tf", "stmn_tf.*"]),
    package_data={"stmn_tf.ops": ["*.so"]},
    install_requires=[
        "tensorflow~=2.20.0",
        "keras>=3.10",
        "tf-models-official==2.20.*",
        "numpy",
        "pycocotools",
        "opencv-python-headless",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    # export: `export.py --format onnx` (tf2onnx, onnx) and the ONNX checks (onnxruntime),
    # pinned to versions that run with TF 2.20 and the numpy / protobuf it installs.
    # tensorflow-serving-api: the gRPC PredictRequest of stmn_tf.serving.client (its tests).
    extras_require={
        "export": EXPORT_REQUIRES,
        "test": ["pytest>=7", "pytest-xdist>=3", "tensorflow-serving-api==2.20.*"] + EXPORT_REQUIRES,
    },
    cmdclass={"build_ops": BuildOps, "build_py": BuildPyWithOps},
)
