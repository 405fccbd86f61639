# inception_train: `make help` lists the targets. Everything runs from the repo's own .venv (created by `make install`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install test lint models demo bench bench-models bench-train bench-data figures eval lock clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the project (editable) with the pinned versions of requirements.lock

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,dali]'
	@rm -f $(VENV)/.installed-* && touch $@

test: install  ## install if needed, then run the test suite (CPU)
	$(PY) -m pytest -q

lint: install  ## ruff on the code, hadolint on the Dockerfile
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

demo: install  ## train a small Inception-ResNet-v2 on the generated demo dataset (CPU, minutes), plot its curve
	$(PY) train.py experiment=demo

bench: install  ## bench-models, then bench-train: the README's performance tables (ARGS='--mode eager ...')
	$(PY) -m inception_train.bench all $(ARGS)

bench-models: install  ## train/infer img/s, peak memory, MFU of every network and setting, ours vs timm
	$(PY) -m inception_train.bench models $(ARGS)

bench-train: install  ## full trainer: bare loop vs synthetic tensors vs real JPEGs through each loader
	$(PY) -m inception_train.bench pipeline $(ARGS)

figures: install  ## paper-style figures and Table-2 style results from run/sweep dirs: make figures RUNS="outputs/... multirun/..."
	$(PY) -m inception_train.plot $(RUNS)

eval: install  ## the paper's eval table for a checkpoint: make eval CKPT=path [ARGS='eval.crops=144 data.root=...']
	$(PY) eval.py $(if $(CKPT),checkpoint=$(CKPT)) $(ARGS)

bench-data: install  ## training-pipeline img/s of the torch loader vs DALI on generated JPEGs (JSON on the last line)
	$(PY) -m inception_train.bench data $(ARGS)

models: install  ## print the model table of the README (params and GFLOPs measured by the project)
	$(PY) -m inception_train.models

lock: install  ## rewrite requirements.lock from the current .venv
	{ sed -n '1,3p' requirements.lock; $(PY) -m pip freeze --exclude-editable | grep -v '^inception' ; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:  ## remove caches (keeps .venv and outputs)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -not -path './.venv/*' -exec rm -rf {} +
