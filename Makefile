# Two entry points for a fresh clone: `make repro` (main job) and `make test`.
# Both create .venv and install requirements.txt into it first.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test lint results

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

results: setup
	python -m ferpipe.results

test: setup
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks
	pytest -q

lint: setup
	ruff format src stages tests benchmarks
	ruff check --fix src stages tests benchmarks
