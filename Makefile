# Both targets set themselves up on a fresh machine (Python 3.11 + network to the package registries).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast wheel lint bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/requirements.lock $(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/oiv4 demo --root ./demo-data

# The sdist and wheel a user would get: built in a throwaway folder (build tools pinned by the lock, also in the
# isolated build environment) and checked by twine.
wheel: $(STAMP)
	tmp=$$(mktemp -d) && PIP_CONSTRAINT=$(CURDIR)/requirements.lock $(BIN)/python -m build -q --outdir $$tmp . \
	  && $(BIN)/twine check --strict $$tmp/*; status=$$?; rm -rf $$tmp; exit $$status

# --dist worksteal: a worker that runs out takes queued tests from the other, so a long test found late does
# not leave one core idle (conftest also starts with the costliest files, by support/tiers.py's measurements).
test: $(STAMP) wheel
	bash tests/setup-system.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -n 2 --dist worksteal --durations=15

# The edit loop: the `fast` subset (support/tiers.py places every test file), every layer, under 90 s on 2 cores.
test-fast: $(STAMP)
	bash tests/setup-system.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -n 2 --dist worksteal -q -m fast

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-data
	rm -rf "$${OIV4_MIRROR_CACHE:-$${TMPDIR:-/tmp}}"/oiv4-mirror-*
