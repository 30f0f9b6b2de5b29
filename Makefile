# Two commands matter: `make demo` and `make test`. Each installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: setup chromium lint test test-fast demo devnet bench clean

setup: $(PY_STAMP) $(NPM_STAMP) chromium

# The dashboard test drives a real headless Chromium (Debian's package; apt needs root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (or set TRAINMARKET_SKIP_BROWSER=1)"; fi; }

$(PY_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# `npm install`, not `npm ci`: js-ipfs pulls an optional electron helper whose own optional dependency is a
# GitHub tarball that no lock file can record, and npm 11's `ci` rejects the lock as out of sync for it.
# With the committed lock present, `install` resolves the same versions.
$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	chmod +x contracts/solc-wrapper
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

demo: setup
	$(PY) -m trainmarket.cli demo $(ARGS)

devnet: setup
	$(PY) -m trainmarket.cli devnet $(ARGS)

clean:
	rm -rf $(VENV) node_modules runs .pytest_cache .mypy_cache .ruff_cache
