# Cliptext: `make run` starts the whole local stack, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
REF_VENV := .venv-ref
PY := $(VENV)/bin/python
MODEL_DIR ?= models/whisper-tiny.en
# the reference implementation (tests and benchmarks only), kept apart: it pulls the CPU onnxruntime.
# av<19: faster-whisper 1.2.1 opens files with av.open(metadata_errors=...), which PyAV 19 (the one pip
# picks on Python >= 3.12) no longer takes
REF_PACKAGES := faster-whisper==1.2.1 jiwer==4.0.0 'av<19'

.PHONY: setup setup-ref protos model run test lint format bench clean

setup: $(VENV)/.installed $(REF_VENV)/.installed protos model

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,local]'
	touch $@

setup-ref: $(REF_VENV)/.installed
$(REF_VENV)/.installed: Makefile
	test -d $(REF_VENV) || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install --quiet --upgrade pip
	$(REF_VENV)/bin/pip install --quiet $(REF_PACKAGES)
	touch $@

protos: $(VENV)/.installed
	$(PY) -m inference.proto_build

model: $(VENV)/.installed
	$(PY) -m inference.export --precisions fp32,int8

run: $(VENV)/.installed protos model
	$(PY) -m cliptext.stack

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m cliptext.local_services --redis --postgres -- $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) -m cliptext.local_services --redis -- bash -c 'set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done'

lint:
	$(VENV)/bin/ruff check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(REF_VENV) models data .run inference/proto *.egg-info
