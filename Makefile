# Two commands matter: `make dev` (run the whole pipeline locally) and `make test` (run every check).
# Both create the virtual environment and install into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests mostly wait on servers (failovers, polls): more workers than the 2 cores pays off.
# Each worker owns its stacks (free ports, own state dirs).
TEST_WORKERS ?= 4

.PHONY: dev test lint unit bench manifests images lock tools clean drills

# The locked versions (hashes checked), then shopipe and its dev stack (services/devstack, a
# distribution of its own that no image installs), editable; `pip install -e '.[dev]' -e
# services/devstack` still works for a quick start, unlocked.
$(STAMP): pyproject.toml services/devstack/pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e . -e services/devstack
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

# The image smoke test (tests/e2e/test_images.py) runs what `make images` built; the image store
# is removed afterwards, pass or fail (it holds gigabytes; the mmdebstrap base is kept).
# The partition drills run after the rest, one at a time: each runs a dozen processes under
# load, and beside other tests they starve each other and the load generator of the two cores.
test: $(STAMP) tools lint images
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15 -m "not drill"; \
	status=$$?; $(BIN)/python -m tests.drills.cleanup; \
	$(BIN)/pytest -m drill tests/drills || status=1; \
	bash scripts/images.sh clean; exit $$status

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

# Regenerate the locks after changing pyproject.toml's dependencies (pip-tools, from PyPI only).
lock:
	bash scripts/lock.sh

clean:
	bash scripts/images.sh clean
	rm -rf $(VENV) .tools .shopipe .mypy_cache .ruff_cache .pytest_cache
