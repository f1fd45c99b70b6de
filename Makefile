# The two set-up commands of the README: `make demo` and `make test`.
# Both create the virtualenv and install liverank into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out

FLINK_VENV ?= .venv-flink
FLINK_STAMP := $(FLINK_VENV)/.installed-stamp

.PHONY: demo test lint format install clean torch-plan flink

# torch first, the build that fits the machine (scripts/install_torch.py: CPU-only unless an
# NVIDIA GPU is present; LIVERANK_TORCH=cpu|cuda overrides), then liverank and its extras.
$(STAMP): pyproject.toml scripts/install_torch.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_torch.py --python $(PY)
	$(PY) -m pip install --quiet -e ".[dev,serve,stream]"
	touch $(STAMP)

install: $(STAMP)

# PyFlink in its own environment (it pins numpy / pyarrow versions older than liverank's): the
# Flink job of the first-only stream (src/liverank/stream/flink_job.py) and its parity test.
# Java 17 comes from the OS (.ci/run installs it when missing).
$(FLINK_STAMP):
	test -x $(FLINK_VENV)/bin/python || $(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install --quiet "apache-flink==2.3.0" "polars>=1.20"
	touch $(FLINK_STAMP)

flink: $(FLINK_STAMP)

demo: $(STAMP)
	$(VENV)/bin/liverank demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

# Two workers (pytest-xdist), each running whole test files, so that module fixtures are built
# once; TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: lint $(FLINK_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(FLINK_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

# What a fresh machine of this kind would install for torch, resolved against the public
# index without installing anything (counts nvidia-* packages).
torch-plan:
	$(PYTHON) scripts/install_torch.py --dry-run --skip-local
