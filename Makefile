# Two commands for a newcomer: `make run` (the whole example stack) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test setup system-tools lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

# Tools the tests drive from outside (dig, headless Chromium); installed once with apt-get.
system-tools:
	bash .ci/system-tools

# State (overrides, last known health) goes to ~/.local/state/gslb, never into the checkout.
run: setup
	$(BIN)/gslb run --state-dir "$${XDG_STATE_HOME:-$$HOME/.local/state}/gslb"

test: setup system-tools
	$(BIN)/ruff check gslb tests bench
	$(BIN)/mypy --strict gslb
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check gslb tests bench
	$(BIN)/ruff format --check gslb tests bench
	$(BIN)/mypy --strict gslb

# Benchmarks against peers from Debian's packages (see docs/benchmarks.md for what each needs).
bench: setup
	$(BIN)/python bench/dns_static.py
	$(BIN)/python bench/dns_gslb.py
	$(BIN)/python bench/dns_signed.py
	$(BIN)/python bench/ecs_scope.py
	$(BIN)/python bench/proxy/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
