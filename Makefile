# `make test` and `make demo` work on a fresh machine with Python 3.11+ and pip:
# they create .venv (unless a virtual environment is already active), install
# the package with what they need, then run.
PYTHON ?= python3
ifdef VIRTUAL_ENV
  PY := python
  STAMP := $(VIRTUAL_ENV)/.csrnn-jax-installed
else
  PY := .venv/bin/python
  STAMP := .venv/.csrnn-jax-installed
endif

.PHONY: test demo install

$(STAMP): setup.cfg pyproject.toml
	@[ -n "$(VIRTUAL_ENV)" ] || [ -x .venv/bin/python ] || $(PYTHON) -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q
