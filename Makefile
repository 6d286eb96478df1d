# CityOps. Quick start: `make run` (install, migrate, demo city, serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SCALE  ?= city
PYTEST_WORKERS ?= 2

.PHONY: install run serve migrate demo test lint typecheck pytest bench clean screenshots

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("CityOps needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

migrate: install
	$(BIN)/cityops migrate

demo: migrate
	$(BIN)/cityops demo --scale $(SCALE) --if-empty

run: demo
	@echo ""
	@echo "CityOps is starting on http://127.0.0.1:8000  (API docs: http://127.0.0.1:8000/api/docs)"
	@echo "Log in as admin / demo-pass-2026 (other demo users: operator1, shift1, dispatcher1,"
	@echo "leader1, inspector1, handler1, district1, reviewer1, evaluator1, monitor1, commander1;"
	@echo "same password). Citizen pages: http://127.0.0.1:8000/public"
	@echo ""
	$(BIN)/cityops serve

serve: install
	$(BIN)/cityops serve

lint: install
	$(BIN)/ruff check cityops tests bench
	$(BIN)/ruff format --check cityops tests bench

typecheck: install
	$(BIN)/mypy cityops

# The suite runs on SQLite, and again on PostgreSQL when CITYOPS_TEST_DATABASE_URL is set.
pytest: install
	env -u CITYOPS_TEST_DATABASE_URL $(BIN)/pytest -q -n $(PYTEST_WORKERS)
	@if [ -n "$$CITYOPS_TEST_DATABASE_URL" ]; then \
	  echo "== again on PostgreSQL: $$CITYOPS_TEST_DATABASE_URL"; \
	  $(BIN)/pytest -q -n $(PYTEST_WORKERS); \
	fi

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/spatial.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Refresh the committed screenshots (docs/screenshots) from the real-browser e2e test.
screenshots: install
	CITYOPS_SCREENSHOTS_DIR=docs/screenshots env -u CITYOPS_TEST_DATABASE_URL $(BIN)/pytest -q -n 0 tests/test_e2e_browser.py
