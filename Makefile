# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv when missing and
# (re)installs only when setup.py changed since the last install (the stamp file names its hash).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum setup.py | cut -c1-12)
HOST   ?= 127.0.0.1
PORT   ?= 8000
STUDIES ?= sample_data
CONF   ?=
PYTEST_ARGS ?=
# torch's OpenMP busy-waits by default, which crawls when anything else shares the cores (see lib/covid_mtl/__init__.py).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install serve test bench sample-data model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Binds to loopback unless HOST is set: the server reads and writes patient images.
serve: install
	@echo "covid-mtl: MONAI Label server on http://$(HOST):$(PORT) serving $(STUDIES)/ (Ctrl-C stops it)"
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)/lib:$$PYTHONPATH" \
	  $(BIN)/monailabel start_server --app apps/covid_mtl --studies $(STUDIES) --host $(HOST) --port $(PORT) $(CONF)

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench

sample-data: install
	$(BIN)/covid-mtl sample-data --out sample_data

# The packaged demo model: `lite` trained on synthetic phantoms (a different seed from sample_data/), then
# copied into the package. Takes about 15 minutes on 2 CPU cores.
MODEL_RUN ?= out/packaged-model
model: install
	rm -rf $(MODEL_RUN)
	$(BIN)/covid-mtl sample-data --out $(MODEL_RUN)/data --n-per-class 8 --n-labelled 8 --seed 1
	$(BIN)/covid-mtl train --manifest $(MODEL_RUN)/data/manifest.csv --config lite --out $(MODEL_RUN)/run \
	  --epochs 12 --patience 4 --lr 1e-3 --seed 0
	cp $(MODEL_RUN)/run/model.pt lib/covid_mtl/models/covid_mtl_lite.pt

clean:
	rm -rf $(VENV)
