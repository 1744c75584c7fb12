# Two commands matter: `make dev` (run the whole pipeline locally) and `make test` (run every check).
# Both create the virtual environment and install into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests mostly wait on servers (failovers, polls): more workers than the 2 cores pays off.
# Each worker owns its stacks (free ports, own state dirs).
TEST_WORKERS ?= 4

.PHONY: dev test lint unit bench manifests images tools clean drills

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

tools: $(STAMP)
	bash scripts/install-tools.sh

dev: $(STAMP)
	$(BIN)/shopipe dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) tools lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15

# The partition drills alone (root: network namespaces); `make test` runs them too.
drills: $(STAMP)
	$(BIN)/python -m tests.drills.cleanup
	mkdir -p .shopipe
	DRILL_RESULTS=.shopipe/drills.jsonl $(BIN)/pytest -m drill tests/drills

bench: $(STAMP)
	$(BIN)/python -m bench

manifests: $(STAMP) tools
	bash scripts/manifests.sh

images:
	bash scripts/images.sh

clean:
	rm -rf $(VENV) .tools .shopipe .mypy_cache .ruff_cache .pytest_cache
