# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PAIR ?= primary
# the demo's cached scenario and model of PAIR (recsys-server prepare)
WORKDIR := artifacts/demo/$(PAIR)

.PHONY: install demo loadtest test test-fast lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, alone and pinned: on Linux x86_64 / Python 3.11 pip takes the local CPU wheel
# of 2.13.0 and never resolves a multi-GB CUDA build through another package's range.
$(STAMP): pyproject.toml | $(BIN)/python
	@if [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ] && \
	    $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	    $(BIN)/pip install --quiet "torch==2.13.0"; \
	fi
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/copyattack demo --pair $(PAIR)

# locust, headless and bounded, against a local server of the demo's model
loadtest: $(STAMP)
	$(BIN)/recsys-server prepare --pair $(PAIR) --workdir $(WORKDIR)
	$(BIN)/python -m loadtests.run --artifact $(WORKDIR)/model.pt --out results/loadtest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# the edit loop: no processes, no real data, no experiments end to end (CI runs `make test`)
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not process and not realdata"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
