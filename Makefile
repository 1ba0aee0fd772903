# eap_assets — every target installs what it needs from pyproject.toml into ./.venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make run` scale: the quick preset by default; `make run RUN_ARGS=` runs paper scale (1000 EAPs, 1.2 s).
RUN_ARGS ?= --quick
PYTEST_ARGS ?= -n auto --dist loadfile
# The local Dagster instance (sqlite) lives in the repository, gitignored; `make run` and `make ui` share it.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

# `make results`: paper scale with the pipeline's training recipe (CNN: batches of 128, early stopping on the
# validation split) for every rotation, then the paper's CNN schedule (5000 steps of 1000, no early stopping)
# for 3drot; the report shows both for 3drot.
RESULTS_ARGS ?=
FAITHFUL_ARGS ?= --rotations 3drot --stages models,report --paper-cnn

# `make generalisation`: 3 morphology variants of every BBP model (simulated in NEURON like any model), 3drot,
# every model kind, then the generalisation protocols and report (docs/generalisation.md).
GENERALISATION_ARGS ?= --variants 3 --rotations 3drot

# `make recording-generalisation`: the recipe of the models for real recordings on its own split, on each held-out
# cell type (E/I) and, with `--variants 3` in the arguments, on unseen morphology variants (their recording EAPs are
# then simulated too: ~1 GB per cell model at 12 000 EAPs; `--recording-eaps-factor 3` for a directory of its own).
RECORDING_GENERALISATION_ARGS ?=

# `make crosscheck`: MEArec's own templates and recordings (32 and 30 kHz) of the 13 cells, read back by SpikeInterface
# and classified by the unit classifiers of a `make run` (trained first if missing) -> docs/results.md
CROSSCHECK_ARGS ?=

# `make bench`: e.g. BENCH_ARGS="--data-dir /path/to/data --only eap_stage vs_mearec" (see bench/run_all.py)
BENCH_ARGS ?=

# `make probes`: one paper-scale `make run` per probe (own data directory and Dagster instance under data/probes/,
# models registered in the one registry PROBES_MLFLOW_URI, by default ./data's, next to the MEA models), then the
# per-probe table data/reports/probes.md, appended to docs/results.md. Neuropixels-24 is a 12-row section of
# Neuropixels 1.0: its classifiers read the units of a 384-channel Neuropixels 1.0 recording window by window.
PROBES ?= SqMEA-10-15 Neuronexus-32 Neuropixels-24
PROBES_ARGS ?= --rotations 3drot
PROBES_MLFLOW_URI ?= sqlite:///$(CURDIR)/data/mlflow/mlflow.db

.PHONY: install compile test test-deploy run ui screenshots mlflow-ui results generalisation recording-generalisation crosscheck results-doc bench cells-doc probes clean

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

DEPLOY_STAMP := $(VENV)/.installed-deploy
$(DEPLOY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,deploy]"
	touch $(DEPLOY_STAMP)

## the production deployment end to end (deployment/test_deploy.py): Debian's PostgreSQL (apt-get if missing),
## mlflow server, code server, dagster-webserver + dagster-daemon with deployment/dagster.yaml, all in a temp dir
## on 127.0.0.1; GraphQL backfills of 13 cells, 52 cell x rotation datasets and a tiny training; stops everything
test-deploy: compile $(DEPLOY_STAMP)
	$(BIN)/python deployment/test_deploy.py $(TEST_DEPLOY_ARGS)

## materialise the whole asset graph (13 cells x 4 rotations) through the local Dagster instance;
## up-to-date partitions are skipped; the runs show in `make ui`
run: compile
	$(BIN)/eap-assets run $(RUN_ARGS)

## the Dagster UI (webserver + daemon) on http://127.0.0.1:3000; Ctrl-C or SIGTERM stops it
ui: compile
	$(BIN)/eap-assets ui

## screenshots of the Dagster UI into docs/img/ by headless Chromium (Debian: `apt-get install chromium`) of the
## instance and data directory in SHOTS_ARGS (default ./.dagster_home and ./data)
screenshots: compile
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/python deployment/ui_screenshots.py $(SHOTS_ARGS)

## the MLflow UI on http://127.0.0.1:5000 for the tracking store under ./data (runs, models, registry)
mlflow-ui: install
	$(BIN)/eap-assets mlflow-ui

## the paper-scale reproduction: whole graph, then docs/results.md from the paper_comparison asset
results: compile
	$(BIN)/eap-assets run $(RESULTS_ARGS)
	$(BIN)/eap-assets run $(FAITHFUL_ARGS)
	$(MAKE) results-doc

## honest generalisation at paper scale: morphology variants, every model kind, recording noise 0-40 µV, unseen
## variants / distances / cell types; data/reports/generalisation.md, copied to docs/generalisation.md (from a
## `make run RUN_ARGS=` data directory: NEURON for the 39 variants, then the two generalisation runs, ~1 h each)
generalisation: compile
	$(BIN)/eap-assets run $(GENERALISATION_ARGS) --stages variants,cells,eaps,training,models,generalisation
	$(MAKE) results-doc

## the same for the models for real recordings: their section of <data directory>/reports/generalisation.md
recording-generalisation: compile
	$(BIN)/eap-assets run $(RECORDING_GENERALISATION_ARGS) --stages variants,cells,recording_generalisation

## the cross-simulator check: data/reports/crosscheck.md, appended to docs/results.md (after the paper comparison)
crosscheck: compile
	$(BIN)/eap-assets run $(CROSSCHECK_ARGS) --stages cells,recording,crosscheck
	$(MAKE) results-doc

# docs/results.md: the paper comparison and the cross-simulator report of one data directory (one `make run` +
# `make crosscheck`); docs/generalisation.md: the generalisation report, when `make generalisation` made one there
results-doc:
	for f in data/reports/paper_comparison.md $(wildcard data/reports/crosscheck.md data/reports/probes.md); do \
	  cat $$f; echo; done > docs/results.md  # a blank line between the reports
	if [ -f data/reports/generalisation.md ]; then cp data/reports/generalisation.md docs/generalisation.md; fi

## benchmarks (EAP engine vs MEArec, full EAP stage, profile, NEURON timings, training, cold end-to-end run)
## -> docs/benchmarks.md; needs a paper-scale `make run RUN_ARGS=` in ./data first (templates, training tables;
## champions and `make crosscheck` for the classify one), or BENCH_ARGS="--data-dir <that run's data>";
## ~1 h on a quiet machine (the end-to-end run alone ~21 min, training ~15 min)
bench: compile
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

## regenerate docs/cells.md at paper settings (13 cells, 1.2 s simulations)
cells-doc: compile
	$(BIN)/eap-assets cells-table --workers 2 --out docs/cells.md

## per-probe results (data/reports/probes.md -> docs/results.md): a paper-scale run per probe in $(PROBES), 3drot
## only (~20-25 min each here on a cold data directory, NEURON included), models into one registry
probes: compile
	for p in $(PROBES); do \
	  EAP_ASSETS_MLFLOW_URI=$(PROBES_MLFLOW_URI) DAGSTER_HOME=$(CURDIR)/data/probes/$$p/.dagster_home \
	    $(BIN)/eap-assets run --data-dir data/probes/$$p --probe $$p $(PROBES_ARGS) || exit 1; \
	done
	$(BIN)/eap-assets probes-report $(addprefix data/probes/,$(PROBES)) --out data/reports/probes.md
	if [ -f data/reports/paper_comparison.md ]; then $(MAKE) results-doc; \
	else echo "docs/results.md not rewritten: it starts with a paper run's report (make results)"; fi

clean:
	rm -rf $(VENV) data .pytest_cache .dagster_home
