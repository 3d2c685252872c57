# Both targets set themselves up on a fresh machine (Python 3.11 + network to the package registries).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test wheel lint bench clean

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

test: $(STAMP) wheel
	bash tests/setup-system.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-data
	rm -rf "$${OIV4_MIRROR_CACHE:-$${TMPDIR:-/tmp}}"/oiv4-mirror-*
