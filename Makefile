# eap_assets — every target installs what it needs from pyproject.toml into ./.venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make run` scale: the quick preset by default; `make run RUN_ARGS=` runs paper scale (1000 EAPs, 1.2 s).
RUN_ARGS ?= --quick
PYTEST_ARGS ?=

.PHONY: install compile test run cells-doc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## compile the NEURON mechanisms of the 13 BBP models once (cached by content hash)
compile: install
	$(BIN)/eap-assets compile

## the test suite: fresh clone -> venv -> mechanisms -> pytest (real NEURON, small scale)
test: compile
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## the main job: all 13 cells x 4 rotations -> data/ (templates, EAPs, feature images)
run: compile
	$(BIN)/eap-assets run $(RUN_ARGS)

## regenerate docs/cells.md at paper settings (13 cells, 1.2 s simulations)
cells-doc: compile
	$(BIN)/eap-assets cells-table --workers 2 --out docs/cells.md

clean:
	rm -rf $(VENV) data .pytest_cache
