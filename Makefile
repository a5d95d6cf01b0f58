# unistatus: make demo | make test | make check
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test` (0: one process). Two: this project's machines have
# two cores; the suite took 15 min in two workers against 25-38 in one.
TEST_WORKERS ?= 2

.PHONY: demo test check bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unistatus demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

check: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/dual_write_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache unistatus.db
