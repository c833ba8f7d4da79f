# make mutate — mutation testing of guest_queue/core with mutmut (see docs/testing-mutation.md)
# make run  — serve the demo on http://127.0.0.1:8000 (SQLite, local memory cache, demo workflow)
# make serve — production: collectstatic, migrate, uvicorn (DEBUG=false, lifespan on, graceful drain)
# make test — lint, type-check and run the whole suite (Django 5.2 on Python 3.11, and Django 6.x
#             on Python >= 3.12 when such an interpreter can be found)

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A Python >= 3.12 for the Django 6 run: on PATH, or installed under pyenv.
PYTHON_NEW ?= $(shell for p in python3.13 python3.12 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV_NEW := .venv-django6
# The Django 6 run: the Django layer's tests (tests/test_*.py, which drive the core through
# it) and the end-to-end tests that go through Django's own request handling (servers,
# start-up, wheel + mount steps, static files). tests/core holds no Django (a test proves
# it) and runs once, in the Django 5.2 run; so does the rest of tests/e2e (nginx, browsers,
# floods, Redis restarts, resumes across servers), which tests the same code on both
# versions. That keeps `make test` short.
DJANGO6_TESTS ?= $(wildcard tests/test_*.py) tests/e2e/test_servers.py \
	tests/e2e/test_startup.py tests/e2e/test_wheel.py tests/e2e/test_static.py
# Both runs spread the tests over TEST_WORKERS pytest-xdist processes (TEST_WORKERS=0: one
# process). Most tests wait on servers, leases and timeouts, so more workers than cores pay
# off. Each worker empties a Redis database of its own: GUEST_TEST_REDIS_URL's number and the
# next TEST_WORKERS-1 (docs/testing.md). --dist loadgroup keeps each xdist_group on one worker.
TEST_WORKERS ?= 4
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadgroup
HOST ?= 127.0.0.1
PORT ?= 8000
# make serve: uvicorn's drain must outlast GUEST_SHUTDOWN_GRACE_SEC (30 by default).
WORKERS ?= 1
GRACEFUL_TIMEOUT ?= 35
FORWARDED_ALLOW_IPS ?= 127.0.0.1

.PHONY: run serve test lint test-django5 test-django6 bench mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

serve: $(VENV)/.installed
	DEBUG=false $(BIN)/python manage.py collectstatic --noinput -v0
	DEBUG=false $(BIN)/python manage.py migrate --noinput
	DEBUG=false exec $(BIN)/uvicorn genestory.asgi:application --host $(HOST) --port $(PORT) \
		--workers $(WORKERS) --lifespan on --timeout-graceful-shutdown $(GRACEFUL_TIMEOUT) \
		--proxy-headers --forwarded-allow-ips=$(FORWARDED_ALLOW_IPS) --no-access-log

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run

test-django5: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-django6:
	@if [ -z "$(PYTHON_NEW)" ]; then echo "No Python >= 3.12 found: skipping the Django 6 run."; exit 0; fi; \
	set -e; \
	[ -x $(VENV_NEW)/bin/python ] || $(PYTHON_NEW) -m venv $(VENV_NEW); \
	$(VENV_NEW)/bin/python -m pip install --quiet --upgrade pip; \
	$(VENV_NEW)/bin/pip install --quiet -r requirements-dev.txt; \
	$(VENV_NEW)/bin/python -c 'import django, sys; print("Django", django.get_version(), "on Python", sys.version.split()[0])'; \
	$(VENV_NEW)/bin/python -m pytest $(PYTEST_PARALLEL) $(or $(PYTEST_ARGS),$(DJANGO6_TESTS))

test: lint test-django5 test-django6

bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.sse_load
	$(BIN)/python -m bench.site_compare

# Mutation testing of guest_queue/core against tests/core (slow; not part of `make test`).
# Results: `$(BIN)/mutmut results`; the score is recorded in docs/testing-mutation.md.
# The tests mostly sleep (Redis leases, timeouts), so more workers than cores pay off.
MUTATE_WORKERS ?= 8
mutate: $(VENV)/.dev-installed
	tools/mutmut-watchdog.sh & watchdog=$$!; \
	PYTEST_ADDOPTS="--timeout=20" $(BIN)/mutmut run --max-children $(MUTATE_WORKERS); status=$$?; \
	kill $$watchdog; exit $$status
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

clean:
	rm -rf mutants $(VENV) $(VENV_NEW) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
