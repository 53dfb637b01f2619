# Two entry points that work on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
LINT_STAMP := $(VENV)/.lint-installed

.PHONY: serve test screenshots lint install bench loadtest clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(BENCH_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

$(LINT_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,lint]'
	@touch $(LINT_STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/memoryd serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# README's screenshots: the browser tests, writing to docs/screenshots/ (make test writes
# them to a temporary directory, so that a test run leaves the tree as it was).
screenshots: $(STAMP)
	MEMORYD_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/web -p no:randomly $(PYTEST_ARGS)

# Every benchmark (docs/benchmarks.md): JSON + Markdown in loadtests/results/, plot in docs/.
# On an embedded PostgreSQL, or DATABASE_URL. BENCH_ARGS="--only fanout --users 300" etc.
bench: $(BENCH_STAMP)
	$(BIN)/python -m loadtests.bench --plot docs/benchmarks-latency.png $(BENCH_ARGS)

# The seed profile alone, full length (16 min): locust headless, PASS/FAIL on its thresholds.
loadtest: $(BENCH_STAMP)
	$(BIN)/python -m loadtests.bench --only seed --stage-scale $(or $(STAGE_SCALE),1) $(BENCH_ARGS)

lint: $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff check memoryd tests loadtests
	$(BIN)/ruff format --check memoryd tests loadtests
	$(BIN)/lint-imports
	$(BIN)/mypy memoryd
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict --kubernetes-version 1.34.0 deploy/k8s/*.yaml
	$(BIN)/yamllint --strict -c deploy/.yamllint.yaml deploy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
