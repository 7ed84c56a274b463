# Orchestration only: every target calls the `asr` command or a recipe's prepare.py.
# Start with `make demo` (the shipped English model on the demo clips) or `make test`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= smoke
# CONFIG may name several files, layered in order (as several --config options):
# CONFIG="recipes/synth/mix.yaml recipes/synth/streaming.yaml".
CONFIG ?= recipes/$(RECIPE)/config.yaml
DATA := data/$(RECIPE)
# The run folder is the config's own trainer.default_root_dir (one per config: exp/synth for
# config.yaml, exp/synth-mix for mix.yaml; the last file's that sets one), so `make train` and
# `asr fit --config` agree.
EXP := $(or $(shell sed -n 's/^  default_root_dir: *//p' $(CONFIG) 2>/dev/null | tail -n 1),exp/$(RECIPE))
# INIT=default (the shipped model), or a model file or checkpoint: fine-tune from it.
INIT ?=
# SEED=N: the run's seed (weights it initialises, and the data's shuffling, mixing and
# perturbation). A run fine-tuned from the last one's model needs a new one, or it is shown the
# same clips in the same order with the same perturbations; the same SEED resumes the same run.
SEED ?=
FIT_ARGS = $(if $(INIT),--model.init_from $(if $(filter default,$(INIT)),$(DEFAULT_MODEL),$(INIT))) \
	$(if $(SEED),--seed_everything $(SEED) --data.seed $(SEED))
# People's speech (recipes/uqm): the shipped model trains on it (mix.yaml: its clips and their
# new voices, stage 4) and is scored on it (stage 3's dev_human and test_human).
HUMAN_CUTS := data/uqm/cuts_test_human.jsonl.gz
HUMAN_TRAIN := data/uqm/cuts_train_voices.jsonl.gz
# A second, small test of people's speech (recipes/tuxpaint: spoken stamp descriptions), scored only.
TUXPAINT_CUTS := data/tuxpaint/cuts_test_tuxpaint.jsonl.gz
# The shipped default model (trained by `make train RECIPE=synth`, put here by `make ship`),
# its word 3-gram LM, and <model>.decoding.json, the beam search tuned for the two.
DEFAULT_MODEL := asr/models/default.pt
DEFAULT_LM := asr/models/default.arpa.gz
# The model `make eval` scores: the shipped one for synth (on the synth test sets and on
# people's dev_human and test_human), else the recipe's own (trained by `make train` when missing).
MODEL ?= $(if $(filter synth,$(RECIPE)),$(DEFAULT_MODEL),$(EXP)/model.pt)
EVAL_CUTS := $(DATA)/cuts_test*.jsonl.gz $(if $(filter synth,$(RECIPE)),data/uqm/cuts_*_human.jsonl.gz $(TUXPAINT_CUTS))
# The run `make ship` exports, and the shipped model it becomes: default (its LM built anew)
# or streaming (SHIP_RUN=exp/synth-streaming SHIP_AS=streaming: the default's LM, its own tuning).
SHIP_RUN ?= exp/synth-mix
SHIP_AS ?= default
SHIP_MODEL := asr/models/$(SHIP_AS).pt
DEMO := recipes/synth/demo
# Recognizers scored beside ours by `make eval` (COMPARE= for none), and our decoders (beam
# uses the model's tuned LM when it has one).
COMPARE ?= pocketsphinx
DECODERS ?= greedy beam
# Passed to the recipe's prepare.py when set: CORPUS=/path/to/downloaded/corpus, SIZE=small.
PREPARE_ARGS := $(if $(CORPUS),--corpus-dir $(CORPUS)) $(if $(SIZE),--size $(SIZE))
# Debian packages the recipes and tests use: speech synthesizers and their voices, sentence
# text (fortunes, the World English Bible, WordNet) and background music for augmentation;
# chromium: the browser the web page of `asr serve` is tested in (driven by Playwright);
# g++ and zlib1g-dev: to build KenLM's build_binary.
APT_PACKAGES := espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite \
	fortunes fortunes-min sword-text-web libsword-utils wordnet-base asterisk-moh-opsound-wav chromium \
	g++ zlib1g-dev libportaudio2
# More voices from Debian's contrib and non-free sections (RHVoice, MBROLA, SVOX Pico, festival's
# rab), installed through the project's own apt configuration (recipes/debian.py), which reaches
# those sections without editing the machine's apt sources.
APT_NON_FREE := rhvoice rhvoice-english libttspico-utils libttspico-data festvox-rablpc16k festlex-oald \
	mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 mbrola-de4

.PHONY: help setup system test test-slow fuzz lint demo prepare train export ship charlm ship-charlm eval bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: RECIPE=$(RECIPE) CONFIG=$(CONFIG) MODEL=$(MODEL) COMPARE=$(COMPARE) DECODERS=$(DECODERS)"
	@echo "             CORPUS=<downloaded corpus> SIZE=<recipe size, e.g. small> INIT=default|<model> SEED=<run seed>"

setup: system $(VENV)/.installed $(BIN)/build_binary ## create .venv and install the package, its pins and dev tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# KenLM's build_binary (no Debian package; the kenlm sdist on PyPI holds its C++ source, built
# as its compile_query_only.sh does, with zlib for .arpa.gz): the beam search turns an ARPA LM
# into a memory-mapped binary trie once, which then loads in milliseconds (asr/decoding.py).
KENLM_SDIST := kenlm==0.3.0
$(BIN)/build_binary: | $(VENV)/.installed
	rm -rf $(VENV)/kenlm && mkdir -p $(VENV)/kenlm
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
		-d $(VENV)/kenlm $(KENLM_SDIST)
	tar -xzf $(VENV)/kenlm/kenlm-*.tar.gz -C $(VENV)/kenlm --strip-components 1
	cd $(VENV)/kenlm && g++ -I. -O2 -DNDEBUG -DKENLM_MAX_ORDER=6 -DHAVE_ZLIB -w -o build_binary \
		lm/build_binary_main.cc $$(ls util/double-conversion/*.cc util/*.cc lm/*.cc | grep -v -e 'test\.cc$$' -e 'main\.cc$$') \
		-lz -lrt
	mv $(VENV)/kenlm/build_binary $@ && rm -rf $(VENV)/kenlm

system: ## install the Debian packages (as root), or print the commands to run
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	non_free=$$(for p in $(APT_NON_FREE); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing$$non_free" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing Debian packages; run:" >&2; \
		[ -z "$$missing" ] || echo "  sudo apt-get install -y" $$missing >&2; \
		[ -z "$$non_free" ] || echo "  sudo $(PYTHON) -m recipes.debian install" $$non_free >&2; \
		exit 1; \
	fi; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi; \
	if [ -n "$$non_free" ]; then \
		echo "installing Debian contrib and non-free packages:" $$non_free; \
		$(PYTHON) -m recipes.debian install $$non_free; \
	fi

test: setup ## run the test suite (slow tests excluded: make test PYTEST_ARGS=-m\ slow)
	$(BIN)/python -m pytest -q $(or $(PYTEST_ARGS),-m "not slow")

test-slow: setup ## only the tests marked slow: long property tests, an hour-long file
	$(BIN)/python -m pytest -q -m slow

fuzz: setup ## the property tests with many examples (FUZZ_EXAMPLES=10000 each): bytes, text, manifests
	$(BIN)/python -m pytest -q -m slow tests/test_fuzz.py

lint: setup ## ruff check and format check
	$(BIN)/ruff check asr recipes tests benchmarks
	$(BIN)/ruff format --check asr recipes tests benchmarks

demo: setup ## transcribe the demo clips with the shipped model: text, word timings, WER
	@echo "--- transcripts (asr transcribe, default model)"
	$(BIN)/asr transcribe $(DEMO)/*.flac
	@echo "--- word timings: start and end (seconds), confidence, word"
	$(BIN)/asr transcribe --format tsv $(DEMO)/synth-test_unseen_voice-000001.flac
	@echo "--- against the references"
	$(BIN)/asr evaluate --show $(DEMO)/cuts.jsonl --output-dir exp/demo --decoder greedy beam
	@echo "--- live: the streaming model hearing a clip in 200 ms chunks (asr stream --model streaming)"
	$(BIN)/asr stream --model streaming $(DEMO)/synth-test-000002.flac

prepare: setup ## make the RECIPE's manifests under data/RECIPE
	$(BIN)/python -m recipes.$(RECIPE).prepare --out $(DATA) $(PREPARE_ARGS)

$(HUMAN_CUTS): | setup
	$(BIN)/python -m recipes.uqm.prepare --out data/uqm --stop-stage 3

$(HUMAN_TRAIN): | setup
	$(BIN)/python -m recipes.uqm.prepare --out data/uqm

$(TUXPAINT_CUTS): | setup
	$(BIN)/python -m recipes.tuxpaint.prepare --out data/tuxpaint

train: prepare $(if $(findstring data/uqm,$(foreach c,$(CONFIG),$(file < $(c)))),$(HUMAN_TRAIN)) ## train RECIPE with CONFIG in exp/RECIPE[-CONFIG] (resumes its last checkpoint; INIT=default fine-tunes the shipped model), then export
	$(BIN)/asr fit $(foreach c,$(CONFIG),--config $(c)) $(FIT_ARGS) \
		$$([ -f $(EXP)/checkpoints/last.ckpt ] && echo --ckpt_path $(EXP)/checkpoints/last.ckpt)
	$(MAKE) --no-print-directory export

export: ## export the run's best checkpoint to exp/RECIPE[-CONFIG]/model.pt
	$(BIN)/asr export $(EXP)/checkpoints/best.ckpt $(EXP)/model.pt

ship: ## SHIP_RUN's best checkpoint -> the shipped model SHIP_AS, with its LM and tuned beam search
	$(BIN)/asr export $(SHIP_RUN)/checkpoints/best.ckpt $(SHIP_MODEL)
	$(if $(filter default,$(SHIP_AS)),$(BIN)/asr lm build data/synth/lm/train.txt data/uqm/text/train.txt \
		--out $(DEFAULT_LM) --exclude data/uqm/text/dev_human.txt data/uqm/text/test_human.txt)
	$(BIN)/asr lm tune data/synth/cuts_dev.jsonl.gz data/uqm/cuts_dev_human.jsonl.gz --model $(SHIP_MODEL) \
		--lm $(DEFAULT_LM) --beam-size 128 --beam-size-token 5 --beam-threshold 15 \
		--lm-weights 1 1.5 2 2.5 3 --word-scores -1 0 --save

# The character LM beside the default model: trained on the synth recipe's LM text.
CHARLM_CONFIG := recipes/synth/charlm.yaml
CHARLM_RUN := exp/synth-charlm

charlm: ## train the character RNN LM (CHARLM_CONFIG; resumes its last checkpoint) -> exp/synth-charlm/charlm.pt
	$(MAKE) --no-print-directory prepare RECIPE=synth
	$(BIN)/asr lm fit --config $(CHARLM_CONFIG) \
		$$([ -f $(CHARLM_RUN)/checkpoints/last.ckpt ] && echo --ckpt_path $(CHARLM_RUN)/checkpoints/last.ckpt)
	$(BIN)/asr lm export $(CHARLM_RUN)/checkpoints/best.ckpt $(CHARLM_RUN)/charlm.pt

ship-charlm: ## the character LM run's best checkpoint -> asr/models/default.charlm.pt (asr lm sample's default)
	$(BIN)/asr lm export $(CHARLM_RUN)/checkpoints/best.ckpt asr/models/default.charlm.pt

eval: prepare $(if $(filter synth,$(RECIPE)),$(HUMAN_CUTS) $(TUXPAINT_CUTS)) $(MODEL) ## WER/CER of MODEL on every test manifest of RECIPE, beside COMPARE
	$(BIN)/asr evaluate --model $(MODEL) $(EVAL_CUTS) --output-dir $(EXP) \
		--decoder $(DECODERS) $(if $(COMPARE),--compare $(COMPARE))

bench: setup ## benchmarks: training, inference, hardware limit, scaling -> exp/bench/results.{md,json,png}
	$(BIN)/python -m benchmarks.run --out exp/bench

$(EXP)/model.pt:
	$(MAKE) --no-print-directory train

clean: ## remove generated data and runs of RECIPE
	rm -rf $(DATA) $(EXP)
