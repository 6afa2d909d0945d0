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
# The browser review app (web/covid_mtl_web) has its own venv: its trame-slicer needs slicer-layer-dm, which pins
# slicer-core 5.11, and the project's tests use slicer-core 5.13 (see web/requirements.txt).
WEB_VENV := .venv-web
WEB_BIN  := $(WEB_VENV)/bin
WEB_STAMP := $(WEB_VENV)/.installed-$(shell sha1sum web/requirements.txt | cut -c1-12)
WEB_HOST ?= 127.0.0.1
WEB_PORT ?= 8080
SERVER   ?= http://127.0.0.1:$(PORT)
CHROMIUM ?= /usr/bin/chromium
# The loopback PACS (`make pacs`): Debian's Orthanc and its DICOMweb plugin, config in pacs/orthanc.json.
ORTHANC ?= /usr/sbin/Orthanc
ORTHANC_DICOMWEB := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
PACS_PORT ?= 8042
PACS_DATA ?= out/pacs
# torch's OpenMP busy-waits by default, which crawls when anything else shares the cores (see lib/covid_mtl/__init__.py).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install serve test bench sample-data model clean web web-install pacs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Binds to loopback unless HOST is set: the server reads and writes patient images. STUDIES may be a DICOMweb URL
# (`make serve STUDIES=http://127.0.0.1:8042/dicom-web`): the PACS credentials `make pacs` wrote ($(PACS_DATA)/
# monailabel.env) are exported for MONAI Label unless MONAI_LABEL_DICOMWEB_USERNAME is already set.
serve: install
	@echo "covid-mtl: MONAI Label server on http://$(HOST):$(PORT) serving $(STUDIES) (Ctrl-C stops it)"
	@case "$(STUDIES)" in http*) if [ -z "$$MONAI_LABEL_DICOMWEB_USERNAME" ] && [ -f "$(PACS_DATA)/monailabel.env" ]; then \
	  echo "covid-mtl: PACS credentials from $(PACS_DATA)/monailabel.env"; fi;; esac
	set -a; case "$(STUDIES)" in http*) if [ -z "$$MONAI_LABEL_DICOMWEB_USERNAME" ] && [ -f "$(PACS_DATA)/monailabel.env" ]; then \
	  . "$(PACS_DATA)/monailabel.env"; fi;; esac; set +a; \
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)/lib:$$PYTHONPATH" \
	  $(BIN)/monailabel start_server --app apps/covid_mtl --studies $(STUDIES) --host $(HOST) --port $(PORT) $(CONF)

# A real Orthanc PACS on 127.0.0.1:$(PACS_PORT) (DICOMweb at /dicom-web, a user and a generated password, storage in
# $(PACS_DATA)), loaded with the sample DICOM series and, when present, ../shared/data/real_ct/full_chest/.
pacs: install $(ORTHANC_DICOMWEB)
	PYTHONPATH="$(CURDIR)/lib" $(BIN)/python -m pacs --port $(PACS_PORT) --data $(PACS_DATA)

test: install web-install $(CHROMIUM) $(ORTHANC_DICOMWEB)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench

sample-data: install
	$(BIN)/covid-mtl sample-data --out sample_data

# The packaged model (docs/MODEL_CARD.md): the first packaged model, lite-75c8ac282bf2 (trained from scratch on the
# training portions of the public COVID-19 CT sets; its recipe is in the model card; taken from git history and
# checked by SHA-256, or BASE_MODEL=path), fine-tuned for the look of real scans: the recorded augmentation and the
# whole scans without pneumonia as segmentation negatives. Validated on patient-grouped held-out slices, then copied
# into the package. About 15 minutes on 2 CPU cores, with progress bars; nothing is downloaded.
DATA ?= ../shared/data/train
# Whole chest CT scans without pneumonia, taught as "no lesion here" (no class). lidc0003 and lungdx_a0001 stay
# out, so one scan of each collection checks the model; ricord0082 (COVID-19) is never trained on.
SCANS ?= ../shared/data/real_ct/full_chest
NEGATIVE_SCANS ?= $(wildcard $(SCANS)/lidc0001 $(SCANS)/lidc0002 $(SCANS)/lungdx_a0002)
MODEL_RUN ?= out/packaged-model
BASE_MODEL ?= $(MODEL_RUN)/base-lite-75c8ac282bf2.pt
BASE_COMMIT = bb83a069959a445caa82427863f3146496bdafc1
BASE_SHA256 = 75c8ac282bf2feb6d9a0c2a84f6e74699874065b57cbdf7572026e65cc04ef75
model: install
	@test -d "$(DATA)" || { echo "covid-mtl: no training data at $(DATA): make model DATA=/path/to/the/public/sets"; exit 2; }
	rm -rf $(MODEL_RUN)/data $(MODEL_RUN)/run $(MODEL_RUN)/eval
	mkdir -p $(MODEL_RUN)
	test -f $(BASE_MODEL) || git show $(BASE_COMMIT):lib/covid_mtl/nets/models/covid_mtl_lite.pt > $(BASE_MODEL) || \
	  { rm -f $(BASE_MODEL); echo "covid-mtl: no git history for the base model: make model BASE_MODEL=path"; exit 2; }
	echo "$(BASE_SHA256)  $(BASE_MODEL)" | sha256sum --check --quiet
	$(BIN)/covid-mtl prepare-data --data $(DATA) --out $(MODEL_RUN)/data --pseudo-masks \
	  $(if $(NEGATIVE_SCANS),--negative-scans $(NEGATIVE_SCANS))
	$(BIN)/covid-mtl train --manifest $(MODEL_RUN)/data/manifest.csv --init $(BASE_MODEL) --out $(MODEL_RUN)/run \
	  --epochs 4 --steps-per-epoch 100 --batch-size 16 --lr 3e-4 --patience 8 --seed 0
	$(BIN)/covid-mtl evaluate --manifest $(MODEL_RUN)/data/manifest.csv --checkpoint $(MODEL_RUN)/run/model.pt \
	  --split val --out $(MODEL_RUN)/eval
	cp $(MODEL_RUN)/run/model.pt lib/covid_mtl/nets/models/covid_mtl_lite.pt

clean:
	rm -rf $(VENV) $(WEB_VENV)

# Review in the browser: `make serve` in one terminal, `make web` in another, then open http://127.0.0.1:8080.
# Loopback only unless WEB_HOST is set (the page shows patient images and writes labels, with no login).
$(WEB_BIN)/python:
	$(PYTHON) -m venv $(WEB_VENV)
	$(WEB_BIN)/pip install -q --upgrade pip

$(WEB_STAMP): web/requirements.txt | $(WEB_BIN)/python
	$(WEB_BIN)/pip install -r web/requirements.txt
	rm -f $(WEB_VENV)/.installed-*
	touch $@

web-install: $(WEB_STAMP)

web: web-install
	@echo "covid-mtl review page on http://$(WEB_HOST):$(WEB_PORT) for the server at $(SERVER) (Ctrl-C stops it)"
	PYTHONPATH="$(CURDIR)/web" $(WEB_BIN)/python -m covid_mtl_web --host $(WEB_HOST) --port $(WEB_PORT) \
	  --covid-mtl-server $(SERVER)

# The browser test (tests/web) drives Debian's Chromium through Playwright; nothing is downloaded at run time.
# VTK renders the views offscreen through EGL (Mesa), so no X server (xvfb) is needed. Without root or apt the
# step only warns, and tests/web skips with the reason.
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium libegl1 libegl-mesa0 \
	  libgl1-mesa-dri || echo "WARNING: could not install chromium: tests/web will be skipped"

# Orthanc and its DICOMweb plugin for `make pacs` and tests/*/test_*pacs*.py; without root or apt the step only
# warns, and those tests skip with the reason.
$(ORTHANC_DICOMWEB):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends orthanc \
	  orthanc-dicomweb || echo "WARNING: could not install orthanc: the PACS tests will be skipped"
	@# Debian starts its own Orthanc service on 8042 where systemd runs; `make pacs` runs its own, configured one.
	@-command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null && systemctl disable --now orthanc; true
