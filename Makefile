# Two commands do everything on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.attncond-installed
BENCH_STAMP := $(VENV)/.attncond-bench-installed
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt change (idempotent).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[test,plot,distributed,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attncond diagnose --config configs/demo.toml

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[bench]' || echo "some benchmark peers did not install; they will be skipped"
	# curvlinops -> backpack declares torchvision, whose only wheel here cannot load beside the CPU
	# torch (and would break transformers); neither imports it for what the benchmarks use
	$(PIP) --no-deps curvlinops-for-pytorch backpack-for-pytorch || echo "curvlinops did not install; skipped"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/spectral_vs_peers.py --out benchmarks/results/spectral_vs_peers.json
	$(PY) benchmarks/structured_vs_generic.py --out benchmarks/results/structured_vs_generic.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
