# Two commands: `make demo` and `make test`. Both build .venv from scratch when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests and benchmarks use: headless Chromium for the web page and the
# report, Fashion-MNIST IDX files for bench/. Installed only when missing and when we are root.
APT_PKGS := chromium chromium-driver dataset-fashion-mnist

.PHONY: demo test lint sysdeps bench clean help

help:
	@echo "make demo   - set up .venv and train+evaluate on the bundled digits set"
	@echo "make test   - set up .venv (dev extras), check the layer contract and function lengths, run the tests"
	@echo "make lint   - only the layer contract (lint-imports) and the function-length check"
	@echo "make bench  - run the benchmarks under bench/ (minutes to an hour)"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	# torch first, alone: on machines with a local wheel cache pip takes it from there
	$(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "NOTE: missing Debian packages:$$missing (browser tests will be skipped)"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/nextclass demo

# The architecture contract (pyproject [tool.importlinter]) and the function-length limit, then the tests.
lint: $(STAMP)
	cd $(CURDIR) && $(BIN)/lint-imports --no-cache
	$(BIN)/python tools/function_lengths.py --limit 60

test: $(STAMP) sysdeps lint
	$(BIN)/python -m pytest -q

bench: $(STAMP) sysdeps
	$(BIN)/python bench/fashion_mnist.py

clean:
	rm -rf $(VENV) runs .pytest_cache
