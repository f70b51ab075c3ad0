# The two commands a new user needs: `make demo` and `make test`.
# Each installs what is missing first (scripts/setup.sh is idempotent).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit integration bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m vtap.demo

test: setup
	$(PY) -m pytest -v -rs tests

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -v -rs tests/integration

bench: setup
	$(PY) -m vtap bench foundation

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
