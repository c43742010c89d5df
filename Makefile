# The two commands the README promises, each doing its own set-up from a fresh clone:
#   make rpi4   builds the default recipe for a Raspberry Pi 4 (edgebuild --target rpi4)
#   make test   lints, type-checks and runs the tests
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,ray]'
	touch $(INSTALLED)

.PHONY: install rpi4 test
install: $(INSTALLED)

rpi4: $(INSTALLED)
	$(VENV)/bin/edgebuild --target rpi4

test: $(INSTALLED)
	$(VENV)/bin/ruff check edgebuild tests bench
	$(VENV)/bin/ruff format --check edgebuild tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench
	$(VENV)/bin/pytest -q
