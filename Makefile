# rnnexp. `make train` runs the default run (one model, one seed) and `make test` the tests; both set up the
# virtual environment (.venv) first if it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
HOST ?= 127.0.0.1
SERVER_ARTIFACTS ?= mlartifacts-server
SERVER_ARGS ?=
ARGS ?=
REPORT_ARGS ?=
PYTEST_ARGS ?=
EXP ?=
URI ?= sqlite:///mlflow.db
# an experiment is conf/experiment/NAME.yaml (one sweep) or conf/experiment/NAME/*.yaml (several)
EXPERIMENTS := $(sort $(basename $(notdir $(wildcard conf/experiment/*.yaml))) $(patsubst conf/experiment/%/,%,$(wildcard conf/experiment/*/)))
# PARTS="adding adding_gated": only those parts of EXP (stage 1 of literature tunes each task apart)
PARTS ?=
EXP_PARTS = $(if $(PARTS),$(addprefix $(EXP)/,$(PARTS)),$(if $(wildcard conf/experiment/$(EXP)/*.yaml),$(addprefix $(EXP)/,$(basename $(notdir $(wildcard conf/experiment/$(EXP)/*.yaml)))),$(EXP)))

# A Hydra override given to make unquoted (make train ARGS=model=mlp_window task.distance=4) reaches
# make as a variable of its own and would be dropped: refuse it. This Makefile's variables are all
# upper case; a Hydra key has a lower-case letter (seed, task.distance, hydra/launcher).
LOWER := a b c d e f g h i j k l m n o p q r s t u v w x y z
STRAY := $(strip $(foreach v,$(.VARIABLES),$(if $(and $(filter command line,$(origin $(v))),$(strip $(foreach c,$(LOWER),$(findstring $(c),$(v))))),$(v))))
ifneq ($(STRAY),)
GIVEN := $(strip $(foreach v,$(filter-out $(STRAY),$(.VARIABLES)),$(if $(and $(filter command line,$(origin $(v))),$(filter-out ARGS REPORT_ARGS,$(v))),$(v)=$($(v)))))
$(error $(firstword $(STRAY))=$($(firstword $(STRAY))) is an override outside ARGS, which make would drop: quote them all, e.g. make $(or $(firstword $(MAKECMDGOALS)),train) $(if $(GIVEN),$(GIVEN) )ARGS="$(strip $(ARGS) $(foreach v,$(STRAY),$(v)=$($(v))))")
endif

.DEFAULT_GOAL := help
.PHONY: help install train test lint format coverage golden test-integration integration postgresql chromium ui-screenshots bench profile gpu-check server sweep tune-lr report docs reproduce reproduce-run eval stale ui clean need-exp

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'

# torch first and pinned: a looser requirement pulls a multi-GB CUDA build. Then the package and
# its dependencies, every version pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP) ## create .venv and install rnnexp and its pinned dependencies

train: $(STAMP) ## run the default run (pattern 1, tanh, delayed_recall at distance 15, seed 0); pass overrides as ARGS="model=mlp_window ..."
	$(BIN)/rnnexp-train $(ARGS)

# one test worker per core (pytest-xdist): a run takes one torch thread, so the cores fill with
# tests; each module on one worker, so that its module fixtures (a sweep, a trained run) are made once
test: $(STAMP) ## run the tests (under four minutes on 2 cores)
	$(BIN)/python -m pytest -n auto --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP) ## ruff: the format and the lint rules of pyproject.toml (CI runs it)
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

format: $(STAMP) ## ruff: format the tree and apply the safe lint fixes
	$(BIN)/ruff format --quiet .
	$(BIN)/ruff check --fix --quiet .

coverage: $(STAMP) ## the tests under coverage.py, the processes they start included: a line per module (about 15 min)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -n auto --dist loadscope $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

golden: $(STAMP) ## rewrite tests/golden.yaml, the exact metrics of short runs, dropping other CPUs' (say why in the commit)
	$(BIN)/python -m tests.golden --write

# In a venv of their own with the `ray` extra, which would slow every --help in .venv.
test-integration: ## the slow tests: real services, many processes, long end-to-end checks (about 20 min)
	@$(MAKE) --no-print-directory VENV=.venv-int EXTRAS=dev,ray integration

integration: $(STAMP) postgresql chromium
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

# Debian's package; the tests run their own server from its programs, in a temporary folder
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql package (the tests start their own server)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
	  || { echo "could not install PostgreSQL: run 'apt-get install postgresql' as root" >&2; exit 2; }; }

# Debian's package: the UI test and `make ui-screenshots` photograph `mlflow ui` with it, headless
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium package (a headless browser for the MLflow UI test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || { echo "could not install Chromium: run 'apt-get install chromium' as root" >&2; exit 2; }; }

ui-screenshots: $(STAMP) chromium ## the MLflow UI screenshots of docs/tracking.md, from a small sweep, into experiments/ui/
	RNNEXP_LOG_MODEL=true $(BIN)/python experiments/ui/screenshots.py

bench: $(STAMP) ## the throughput benchmark into experiments/throughput/results.md (about 10 min on 2 cores; ARGS="--rows 1,6")
	$(BIN)/python experiments/throughput/bench.py $(ARGS)

profile: $(STAMP) ## where an epoch's and a run's time goes (cProfile) into experiments/throughput/profile.md (about a minute)
	$(BIN)/python experiments/throughput/breakdown.py $(ARGS)

gpu-check: $(STAMP) ## on a CUDA machine: GPU against CPU, repeatability, resume, epoch times (skipped without one)
	$(BIN)/python experiments/throughput/gpu_check.py $(ARGS)

server: $(STAMP) ## an MLflow server for a team: PostgreSQL at RNNEXP_SERVER_DB, on HOST:PORT (127.0.0.1:5000); SERVER_ARGS: mlflow server's options
	@test -n "$$RNNEXP_SERVER_DB" || { echo "set RNNEXP_SERVER_DB=postgresql://USER:PASSWORD@HOST/DB, the backend store" >&2; exit 2; }
	@echo "MLflow server on http://$(HOST):$(PORT), artifacts in $(SERVER_ARTIFACTS) (point runs at it: tracking=server MLFLOW_TRACKING_URI=http://$(HOST):$(PORT))"
	@case "$(HOST)" in 127.0.0.1|localhost|::1) ;; *) case "$(SERVER_ARGS)" in *--app-name*) ;; *) \
	  echo "warning: HOST=$(HOST) serves every run, and lets anyone who reaches $(PORT) change or delete them, with no authentication: add SERVER_ARGS='--app-name basic-auth' (MLflow's logins) or put it behind a reverse proxy that authenticates" >&2;; esac;; esac
	@# the database's URL (its password) through the environment: a command line shows in `ps` to every user
	MLFLOW_BACKEND_STORE_URI="$$RNNEXP_SERVER_DB" $(BIN)/mlflow server --artifacts-destination "$(SERVER_ARTIFACTS)" --serve-artifacts --host $(HOST) --port $(PORT) $(SERVER_ARGS)

need-exp:
	@test -n "$(filter $(EXP),$(EXPERIMENTS))" || { echo "EXP='$(EXP)' is not an experiment of conf/experiment/; give EXP=<one of: $(EXPERIMENTS)> (an MLflow experiment's runs: $(BIN)/rnnexp-report --experiment $(or $(EXP),NAME) --uri \"$(URI)\")" >&2; exit 2; }

sweep: $(STAMP) need-exp ## run an experiment's sweeps: make sweep EXP=forget_bias (URI=...; LR_FROM=EXP_lr: the rates tune-lr chose)
	@for part in $(EXP_PARTS); do \
	  echo "$(BIN)/rnnexp-train -m experiment=$$part tracking.uri=\"$(URI)\" $(if $(LR_FROM),optim.lr_from=$(LR_FROM)) $(ARGS)"; \
	  $(BIN)/rnnexp-train -m experiment=$$part tracking.uri="$(URI)" $(if $(LR_FROM),optim.lr_from=$(LR_FROM)) $(ARGS) || exit $$?; \
	done

# stage 1 of the learning-rate recipe (rnnexp/tuning.py): a log grid, two seeds, validation only
LR_GRID ?= 0.0003,0.001,0.003,0.01,0.03
LR_SEEDS ?= 0,1
# how far a choice at the grid's edge extends the grid, one step a round (at most 5 rounds)
LR_BOUND ?= 0.00001,1
LR_FROM ?=

# A rate that diverges fails its jobs and so its sweep: expected here, so the parts go on, and
# the table says for each variant what was chosen, or why nothing was (its exit status then 1).
tune-lr: $(STAMP) need-exp ## choose each variant's lr on validation: EXP's sweeps at every rate of LR_GRID, seeds LR_SEEDS, into experiment EXP_lr, the grid extended past a choice at its edge to LR_BOUND (URI=...)
	@for part in $(EXP_PARTS); do \
	  echo "$(BIN)/rnnexp-train -m experiment=$$part optim.lr=$(LR_GRID) seed=$(LR_SEEDS) optim.lr_from=null tracking.experiment=$(EXP)_lr tracking.uri=\"$(URI)\" $(ARGS)"; \
	  $(BIN)/rnnexp-train -m experiment=$$part optim.lr=$(LR_GRID) seed=$(LR_SEEDS) optim.lr_from=null tracking.experiment=$(EXP)_lr tracking.uri="$(URI)" $(ARGS) \
	    || echo "(a job of $$part failed: a diverged rate is left out of the choice)"; \
	done
	@# a choice at its grid's edge: run one grid step beyond it, until every choice is interior or at LR_BOUND
	@for round in 1 2 3 4 5; do \
	  rates=$$($(BIN)/python -m rnnexp.tuning --experiment $(EXP)_lr --uri "$(URI)" --beyond-edge $(LR_BOUND)) || exit $$?; \
	  test -n "$$rates" || break; \
	  echo "(a choice is at its grid's edge: extending the grid by $$rates)"; \
	  for part in $(EXP_PARTS); do \
	    echo "$(BIN)/rnnexp-train -m experiment=$$part optim.lr=$$rates seed=$(LR_SEEDS) optim.lr_from=null tracking.experiment=$(EXP)_lr tracking.uri=\"$(URI)\" $(ARGS)"; \
	    $(BIN)/rnnexp-train -m experiment=$$part optim.lr=$$rates seed=$(LR_SEEDS) optim.lr_from=null tracking.experiment=$(EXP)_lr tracking.uri="$(URI)" $(ARGS) \
	      || echo "(a job of $$part failed: a diverged rate is left out of the choice)"; \
	  done; \
	done
	$(BIN)/python -m rnnexp.tuning --experiment $(EXP)_lr --uri "$(URI)"

# the comparisons an experiment's README makes, tested by the report
COMPARISONS = $(wildcard experiments/$(EXP)/comparisons.yaml)

report: $(STAMP) need-exp ## tables, tests and plots of an experiment's runs into experiments/EXP/results (URI=...; REPORT_ARGS=--evaluations)
	$(BIN)/rnnexp-report --uri "$(URI)" --experiment $(EXP) --out experiments/$(EXP)/results $(if $(COMPARISONS),--comparisons $(COMPARISONS)) $(REPORT_ARGS)

docs: $(STAMP) ## rewrite the READMEs' generated results blocks from the committed results files
	$(BIN)/python -m rnnexp.docs

reproduce: $(STAMP) need-exp ## the sweep, the report, then the READMEs' tables: make reproduce EXP=forget_bias
	$(MAKE) --no-print-directory sweep report docs EXP=$(EXP)

reproduce-run: $(STAMP) ## re-run a logged run from its config and commit, compare metrics: RUN=<id> (URI=...)
	@test -n "$(RUN)" || { echo "give RUN=<run id> (an MLflow run id)" >&2; exit 2; }
	$(BIN)/python -m rnnexp.reproduce $(RUN) --uri "$(URI)"

eval: $(STAMP) ## evaluate best checkpoints, logged beside them: RUN=<id> or EXP=<name> (all its runs), ARGS="task.length=40" (URI=...)
	@test -n "$(RUN)$(EXP)" || { echo "give RUN=<run id> (a FINISHED training run) or EXP=<experiment>, and task overrides as ARGS=\"task.distance=32\"" >&2; exit 2; }
	$(BIN)/rnnexp-eval $(if $(RUN),--run $(RUN),--experiment $(EXP)) --uri "$(URI)" $(ARGS)

stale: $(STAMP) ## mark KILLED the RUNNING runs whose process died without closing them (URI=...)
	$(BIN)/python -m rnnexp.tracking --stale --uri "$(URI)"

# a server (URI=http://...) serves its own UI: nothing to start here
ui: $(STAMP) ## serve the MLflow UI over the store on 127.0.0.1 (PORT=5000, URI=sqlite:///mlflow.db)
	@case "$(URI)" in http://*|https://*) echo "$(URI) is a tracking server: open it in a browser, it serves the UI"; exit 0;; esac; \
	case "$(URI)" in sqlite:///*|postgresql://*|postgresql+*|mysql*) ;; *) echo "make ui: URI=$(URI): a store's URI: sqlite:///FILE (default sqlite:///mlflow.db), a database's, or a tracking server's http(s)://" >&2; exit 2;; esac; \
	case "$(URI)" in sqlite:///*) test -f "$(patsubst sqlite:///%,%,$(URI))" || { echo "make ui: URI=$(URI): no store at $(patsubst sqlite:///%,%,$(URI)) (runs go to sqlite:///mlflow.db unless tracking.uri says otherwise; \`make train\` makes it)" >&2; exit 2; };; esac; \
	$(BIN)/python -c "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $(PORT)))" 2>/dev/null \
	  || { echo "make ui: PORT=$(PORT) is in use on 127.0.0.1 (another make ui?): give another, e.g. make ui PORT=$$(( $(PORT) + 1 ))" >&2; exit 2; }; \
	echo "MLflow UI over $(URI) on http://127.0.0.1:$(PORT) (Ctrl-C stops it)"; \
	$(BIN)/mlflow ui --backend-store-uri "$(URI)" --host 127.0.0.1 --port $(PORT)

clean: ## remove .venv, .venv-int, caches (tokenised data too) and Hydra's outputs; keeps mlflow.db, mlartifacts/
	rm -rf .venv .venv-int outputs multirun .cache .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
