# The two commands: `make run` serves the console, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock | sha256sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

AGENTS := tests/agents
AGENTS_STAMP := $(AGENTS)/node_modules/.installed-$(shell cat $(AGENTS)/package.json $(AGENTS)/package-lock.json | sha256sum | cut -c1-12)

.PHONY: run serve test setup system-packages migrate lint format bench bench-streams agents

$(STAMP): requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "Python 3.12 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

# The coding agents the tests run against a live console (tests/agents), at the versions
# package.json pins; their own install steps only copy their platform's binary into place.
$(AGENTS_STAMP): $(AGENTS)/package.json $(AGENTS)/package-lock.json
	cd $(AGENTS) && npm install --no-save --no-audit --no-fund --loglevel=error
	@rm -f $(AGENTS)/node_modules/.installed-*
	@touch $(AGENTS_STAMP)

agents: $(AGENTS_STAMP)

system-packages:
	@sh bin/system-packages

migrate: setup
	DEBUG=true $(BIN)/python manage.py migrate --noinput

run: system-packages migrate
	DEBUG=true $(BIN)/python manage.py demo
	DEBUG=true $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Production: WORKERS uvicorn workers (uvloop, httptools) with their job runners, settings
# from the environment (DATABASE_URL, REDIS_URL, SECRET_KEY...); SIGTERM writes every booking.
WORKERS ?= 2
serve: setup
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# Two test processes side by side (pytest-xdist), each with its own database and Redis
# database; the tests of one file stay in one process. TEST_PROCESSES=1 runs them in one.
TEST_PROCESSES ?= 2
test: system-packages setup agents
	MIRA_TESTING=1 $(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --durations=15 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# What the /v1 gateway adds to a chat call, against the simulator called directly, then the usage
# page and CSV export over 1,000,000 records (bench/README.md). BENCH_WORKERS=N sets the
# console's worker processes; BENCH_ARGS passes options to the gateway bench, e.g. --help;
# BENCH_USAGE_RECORDS changes the size of the usage history. BENCH_DB=postgres runs both on
# PostgreSQL and Redis (DATABASE_URL and REDIS_URL, or throwaway ones started for it).
# `make bench-streams`: how many slow streams one worker holds (BENCH_STREAMS, 5,000).
bench: setup
	BENCH_WORKERS="$(BENCH_WORKERS)" $(BIN)/python -m bench.gateway $(BENCH_ARGS)
	$(BIN)/python -m bench.usage

BENCH_STREAMS ?= 5000
bench-streams: setup
	$(BIN)/python -m bench.streams --streams $(BENCH_STREAMS)
