# The two set-up commands of the README: `make demo` and `make test`.
# Both create the virtualenv and install liverank into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out

.PHONY: demo test lint format install clean torch-plan

# torch first, the build that fits the machine (scripts/install_torch.py: CPU-only unless an
# NVIDIA GPU is present; LIVERANK_TORCH=cpu|cuda overrides), then liverank and its extras.
$(STAMP): pyproject.toml scripts/install_torch.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_torch.py --python $(PY)
	$(PY) -m pip install --quiet -e ".[dev,serve,stream]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/liverank demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

test: lint
	$(PY) -m pytest

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

# What a fresh machine of this kind would install for torch, resolved against the public
# index without installing anything (counts nvidia-* packages).
torch-plan:
	$(PYTHON) scripts/install_torch.py --dry-run --skip-local
