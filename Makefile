# Every target sets itself up: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stmn-installed
OPS_LIB := stmn_tf/ops/_match_trans_ops.so
OPS_SRC := $(wildcard custom_ops/*/*.cc custom_ops/*/*.h custom_ops/*/*.cu custom_ops/*/*.cuh) \
	custom_ops/build.py
PYTEST := $(PY) -m pytest -p no:cacheprovider
# Two workers: much of a test's time is single-threaded tracing and process start-up,
# so two share the 2 cores well; a module stays on one worker (tests/conftest.py).
PARALLEL := -n 2 --dist loadgroup

.PHONY: install ops test test-quick bench demo ablation gpu-check clean

install: $(STAMP) $(OPS_LIB)

# Re-run pip only when the dependencies change.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(OPS_LIB): $(STAMP) $(OPS_SRC)
	$(PY) setup.py -q build_ops

ops: $(STAMP)
	$(PY) setup.py -q build_ops --force

test: install
	$(PYTEST) $(PARALLEL) --durations=30 tests

test-quick: install
	$(PYTEST) $(PARALLEL) -m "not slow" tests

# Each benchmark prints a table and a final JSON line; ratios are taken within a run.
BENCHMARKS := $(wildcard benchmarks/*.py)
bench: install
	@set -e; for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b; done

demo: install
	$(PY) -m stmn_tf.demo $(DEMO_ARGS)

# Table 2 in miniature: reuses make demo's R-FCN when it is there; resumable.
ablation: install
	$(PY) -m stmn_tf.ablation $(ABLATION_ARGS)

# The CUDA kernels on a GPU without TensorFlow (nvcc, NumPy; PyTorch for the peer):
# agreement with the CPU path, timing, a table and a JSON line. Without a GPU: one
# line, exit 0. Deliberately not after `install`.
gpu-check:
	@$(PYTHON) custom_ops/match_trans/gpu_check/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf build *.egg-info stmn_tf/ops/*.so stmn_tf/ops/*.so.cpu stmn_tf/ops/*.so.cuda
