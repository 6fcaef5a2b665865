# skydeck: two commands on a fresh machine, `make demo` and `make test`.
# Both create (or reuse) .venv and install the project with its PyPI dependencies, at the
# versions constraints.txt pins (pyproject.toml gives ranges; the tests were recorded with these);
# the mpich extra (a wheel) brings a working mpiexec, so no system MPI is needed; the geant4
# extra (a wheel) brings Geant4 itself, the physics reference of the propagation tests.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.skydeck-installed
DEMO_WS ?= skydeck-workspace

.PHONY: demo demo-where clean-demo demo-headless test bench lint venv sysdeps clean gpu-bundle gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,mpich,postgresql,geant4]'
	touch $(STAMP)

# Tools some integration tests drive (rsync, tmux, zsh for the completion script, h5dump,
# promtool for contrib/prometheus: Debian package prometheus). Best effort: a test whose
# tool is missing skips with the reason (under CI the promtool tests fail instead).
sysdeps:
	@missing=""; for t in rsync tmux zsh promtool:prometheus; do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 || true; \
	fi

test: $(STAMP) sysdeps
	$(BIN)/ruff check engine tests benchmarks $(wildcard console)
	$(BIN)/ruff format --check --quiet engine tests benchmarks $(wildcard console)
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# The console on a demo workspace: a feeder delivers a mock downlink every few seconds, a
# `skydeck-engine watch` daemon processes them, and a propagation event fills the Hits panel.
# Each run adds up to 40 downlinks of about 35 MB (incoming + staged): `make clean-demo`.
demo: $(STAMP)
	@$(MAKE) -s --no-print-directory demo-where
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/skydeck --demo -w "$(DEMO_WS)"; rc=$$?; \
	echo "demo workspace $$(realpath -m -- "$(DEMO_WS)") is now $$(du -sh -- "$(DEMO_WS)" 2>/dev/null | cut -f1);" \
	"\`make clean-demo\` removes it"; exit $$rc

demo-where:
	@echo "demo workspace: $$(realpath -m -- "$(DEMO_WS)") (DEMO_WS=...); it grows by about 35 MB a"
	@echo "downlink, up to 40 downlinks (about 1.5 GB) a run; \`make clean-demo\` removes it"

# Removes the demo workspace directory, and only it; refuses one that is not a skydeck
# workspace (no skydeck.toml), the checkout itself or /. Areas that its skydeck.toml moved
# elsewhere are not touched.
clean-demo:
	@ws="$(DEMO_WS)"; \
	if [ ! -e "$$ws" ] && [ ! -L "$$ws" ]; then echo "no demo workspace at $$(realpath -m -- "$$ws")"; exit 0; fi; \
	real=$$(realpath -- "$$ws"); \
	if [ "$$real" = / ] || [ "$$real" = "$$(realpath -- "$(CURDIR)")" ] || [ -L "$$ws" ]; then \
		echo "make clean-demo: $$ws: refusing to remove $$real" >&2; exit 2; fi; \
	if [ ! -f "$$ws/skydeck.toml" ]; then \
		echo "make clean-demo: $$ws: not a skydeck workspace (no skydeck.toml); not removed" >&2; exit 2; fi; \
	size=$$(du -sh -- "$$ws" | cut -f1); rm -rf -- "$$ws" && echo "removed $$real ($$size)"

# Headless (CI, no terminal): deliver one mock downlink and build its chunks with mpiexec.
demo-headless: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m engine.mock.demo --workspace $(DEMO_WS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do \
		echo "== $$b"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check engine tests benchmarks $(wildcard console)
	$(BIN)/ruff format --check --quiet engine tests benchmarks $(wildcard console)
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
