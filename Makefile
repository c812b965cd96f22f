# `make test` and `make demo` work on a fresh machine with Python 3.11+ and pip:
# they create .venv (unless a virtual environment is already active), install
# the package with what they need, pinned to the tested versions in
# requirements-lock.txt (`make install LOCK=` takes the newest that the
# package's ranges allow), then run.
PYTHON ?= python3
ifdef VIRTUAL_ENV
  PY := python
  STAMP := $(VIRTUAL_ENV)/.csrnn-jax-installed
else
  PY := .venv/bin/python
  STAMP := .venv/.csrnn-jax-installed
endif

.PHONY: test test-fast demo demo-run install

DEMO_DATA := data/demo_prepared
DEMO_RUN := runs/demo

LOCK ?= requirements-lock.txt

$(STAMP): pyproject.toml $(LOCK)
	@[ -n "$(VIRTUAL_ENV)" ] || [ -x .venv/bin/python ] || $(PYTHON) -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' $(if $(LOCK),-c $(LOCK))
	@touch $@

install: $(STAMP)

# Both lanes on every core (pytest-xdist, a file per worker at a time);
# test-fast leaves out the slow lane (tests marked slow: end to end, see
# setup.cfg) and is what to run while working.
PYTEST := $(PY) -m pytest -q -n auto --dist loadfile

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# The demo: prepare the bundled piano/violin data, train the CPU recipe
# (configs/cpu.py) at a shorter schedule, generate a few seconds per class
# with the recipe's sampling settings (its config.sample), evaluate. A second run reuses the
# prepared data and the finished (or resumes the unfinished) training run.
# `demo-run` is the same without the install step (tests call it with a tiny
# model through DEMO_FLAGS).
DEMO_FLAGS ?=
DEMO_SECONDS ?= 3
DEMO_STEPS ?= 3100

demo: $(STAMP) demo-run

demo-run:
	@if [ -f $(DEMO_DATA)/manifest.json ]; then \
	  echo "Reusing the prepared demo data in $(DEMO_DATA)"; \
	else \
	  $(PY) -m csrnn_jax.cli.prepare data/demo $(DEMO_DATA) --chunk-seconds 2 --balance \
	    --trim-db -36; \
	fi
	$(PY) train.py --config configs/cpu.py:$(DEMO_DATA) --workdir $(DEMO_RUN) \
	  --config.train.num_steps=$(DEMO_STEPS) $(DEMO_FLAGS)
	$(PY) sample.py --workdir $(DEMO_RUN) --seconds $(DEMO_SECONDS) --num 2 \
	  --out $(DEMO_RUN)/samples/demo
	$(PY) -m csrnn_jax.cli.evaluate --workdir $(DEMO_RUN) --split test \
	  --generated $(DEMO_RUN)/samples/demo
	@echo
	@echo "Demo outputs:"
	@echo "  wav files:        $(DEMO_RUN)/samples/demo/*.wav"
	@echo "  spectrograms:     $(DEMO_RUN)/samples/demo/spectrograms.png"
	@echo "  loss curve:       $(DEMO_RUN)/loss_curve.png"
	@echo "  evaluation:       $(DEMO_RUN)/eval_test_step*.json and"
	@echo "                    $(DEMO_RUN)/samples/demo/audio_eval.md (printed above)"
