# predq — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BENTOML_VENV := bench/.venv-bentoml

.PHONY: run test faults bench lint venv clean

venv: $(VENV)/.installed

# Re-installs only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## Run the whole service in the foreground (embedded SQLite + Redis unless DATABASE_URL/REDIS_URL are set).
run: venv
	$(BIN)/python -m scripts.run

## Run the tests against real PostgreSQL, Redis and a Celery worker (starting them if needed).
test: venv
	bash scripts/ensure-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

## Only the fault tests (worker SIGKILL, Redis and PostgreSQL restarts, broker down); prints a report.
faults: venv
	bash scripts/ensure-services.sh
	$(BIN)/pytest -m faults $(PYTEST_ARGS)

## Benchmark predq against BentoML, the tutorial design and the bare-Flask ceiling, then batch jobs (~10 minutes).
bench: venv $(VENV)/.bench-installed $(BENTOML_VENV)/.installed
	bash scripts/ensure-services.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS); status=$$?; \
	$(BIN)/python -m bench.bulk && exit $$status

$(VENV)/.bench-installed: bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

# BentoML, the peer, in a virtualenv of its own: its pins are not ours.
$(BENTOML_VENV)/.installed: bench/requirements-bentoml.txt
	$(PYTHON) -m venv $(BENTOML_VENV)
	$(BENTOML_VENV)/bin/pip install --quiet --upgrade pip
	$(BENTOML_VENV)/bin/pip install --quiet -r bench/requirements-bentoml.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(BENTOML_VENV) var .pytest_cache .ruff_cache .mypy_cache
