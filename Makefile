# Two commands: `make demo` (train, evaluate and infer on the built-in simulated data) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aasn-installed
DEMO_DIR ?= bundle/outputs/demo
# the demo data: the configs' default dataset_dir
DEMO_DATA ?= bundle/data/demo

.PHONY: install demo demo-data test lint clean-demo wheel bundle-archive verify-bundle

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $(STAMP)

install: $(STAMP)

# Simulate the demo data if absent, train, evaluate on the test fold, infer; print the metrics and picture paths.
demo: $(STAMP)
	cd bundle && ../$(PY) -m scripts.demo --out ../$(DEMO_DIR) --data ../$(DEMO_DATA)

# Only simulate the demo data (then `python -m monai.bundle run --config_file configs/train.json` finds it).
demo-data: $(STAMP)
	cd bundle && ../$(PY) -m scripts.demo --data-only --data ../$(DEMO_DATA)

# pytest exits 5 when it collects no test: that is reported, not treated as a failure.
test: $(STAMP)
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# ruff's rules and their reasons are in pyproject.toml ([tool.ruff])
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_DATA)

# The project's wheel (custom_transforms, simulation) in dist/, built from a staged copy (no build/ in the tree).
wheel: $(STAMP)
	$(PY) tools/bundle_archive.py --wheel --out dist

# The bundle as one zip in dist/ (aasn_pelvic_fracture_v<version>.zip); it runs where the wheel is installed.
bundle-archive: $(STAMP)
	$(PY) tools/bundle_archive.py --out dist

# The MONAI model zoo's bundle checks (models/model.pt excused while no weights are shipped).
verify-bundle: $(STAMP)
	$(PY) tools/verify_bundle.py --bundle bundle --allow-missing-weights
