# The two commands a new user needs: `make up` runs the system, `make test` runs the tests.
# Both create/update the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up lint test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/serialtrack up

# ruff and mypy over the whole tree (configured in pyproject.toml); `make test` runs them first.
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/mypy

# -rs: every skip prints its reason. Two workers, each test module on one (README, "Tests").
test: lint
	$(BIN)/python -m pytest -q -rs -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/inventory_throughput.py
	$(BIN)/python bench/bulk_receipt.py

clean:
	rm -rf $(VENV) serialtrack-data
