# lesionlab: two set-up commands, `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; a GPU user installs the CUDA build first (README, "GPU").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.lesionlab-installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[deploy,dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/lesionlab demo --workdir demo_output

test: install
	$(PY) -m pytest tests -q

bench: install
	$(PY) bench/bench_dunet.py
	$(PY) bench/bench_inferer.py

clean:
	rm -rf demo_output .pytest_cache
