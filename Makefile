# Alembic Dashboard — `make run` to try it, `make test` to test it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test init lint bench clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

init: $(BIN)/.installed
	$(BIN)/flask --app wsgi init

run: init
	@echo "Serving Alembic Dashboard on http://127.0.0.1:$(PORT)"
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The suite runs on TEST_WORKERS pytest-xdist workers (tests that wait on
# processes, servers or a browser leave a core idle, so two more workers
# than cores); tests marked `alone` (they busy every core on purpose) run
# afterwards, by themselves.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
# the files that hold `alone` tests (the second run collects only these)
ALONE_FILES = $(shell grep -l "mark.alone" tests/*.py tests/*/*.py)

test: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not alone"
	$(BIN)/python -m pytest -m alone $(ALONE_FILES)

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/history.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
