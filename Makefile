# skydeck: two commands on a fresh machine, `make demo` and `make test`.
# Both create (or reuse) .venv and install the project with its PyPI dependencies, at the
# versions constraints.txt pins (pyproject.toml gives ranges; the tests were recorded with these);
# the mpich extra (a wheel) brings a working mpiexec, so no system MPI is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.skydeck-installed
DEMO_WS ?= skydeck-workspace

.PHONY: demo demo-headless test bench lint venv sysdeps clean gpu-bundle gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,mpich]'
	touch $(STAMP)

# Tools some integration tests drive (rsync, tmux, zsh for the completion script, h5dump).
# Best effort: a test whose tool is missing skips with the reason, it never fails for it.
sysdeps:
	@missing=""; for t in rsync tmux zsh; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 || true; \
	fi

test: $(STAMP) sysdeps
	$(BIN)/ruff check engine tests benchmarks $(wildcard console)
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# The console on a demo workspace: a feeder delivers a mock downlink every few seconds, a
# `skydeck-engine watch` daemon processes them, and a propagation event fills the Hits panel.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/skydeck --demo -w $(DEMO_WS)

# Headless (CI, no terminal): deliver one mock downlink and build its chunks with mpiexec.
demo-headless: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m engine.mock.demo --workspace $(DEMO_WS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do \
		echo "== $$b"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check engine tests benchmarks $(wildcard console)
	$(BIN)/mypy

# The GPU proof for a session lent a GPU machine (bare, no network; docs/propagation.md).
# Here: gather what must travel (PyCUDA sdist, a few pure wheels, the project's wheel) into
# the ignored $(GPU_BUNDLE), which the device call carries. There: build PyCUDA, run the gpu
# tests, compare with NumPy photon by photon, time 1e7..1e9 photons, write the report into
# $$OUT (else .gpu-check/). Uses the machine's python3 (with CuPy), not the venv.
GPU_BUNDLE ?= .gpu-bundle
gpu-bundle: $(STAMP)
	$(BIN)/python -m tests.gpu.bundle $(GPU_BUNDLE)

gpu-check:
	python3 -m tests.gpu.check --bundle $(GPU_BUNDLE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
