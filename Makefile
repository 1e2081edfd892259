# Two commands for a fresh machine:  `make demo` (stack + first backup + Dagster UI)  and  `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
# Load the ports and password the stack wrote, then point Dagster at the project's instance.
# The project's .venv is the active environment, as `dg` expects.
WITH_ENV := set -a && . .stack/stack.env && set +a && mkdir -p "$$DAGSTER_HOME" && ln -sf "$(CURDIR)/instance/dagster.yaml" "$$DAGSTER_HOME/dagster.yaml" && \
	export VIRTUAL_ENV="$(CURDIR)/.venv" PATH="$(CURDIR)/.venv/bin:$$PATH" &&

.PHONY: demo test lint bench bench-growth stack-up stack-down

stack-up:
	bash stack/up.sh

stack-down:
	bash stack/down.sh

# Start the stack, take yesterday's backups once through Dagster (the three daily jobs, so the
# runs show in the UI), then serve the UI with schedules and sensors running
# (http://127.0.0.1:$${DAGSTER_PORT:-3000}).
demo: stack-up
	$(WITH_ENV) for job in postgres_backup_job redis_backup_job kafka_backup_job; do \
	  dg launch --job $$job --partition "$$(date -u -d yesterday +%F)" || exit 1; done
	$(WITH_ENV) exec dg dev -h 127.0.0.1 -p "$${DAGSTER_PORT:-3000}"

# Linters first: a red lint fails the test command (and so CI) before the suite runs.
LINTED := auction_backup_pipelines tests bench stack
lint:
	.venv/bin/ruff check $(LINTED)
	.venv/bin/ruff format --check $(LINTED)
	.venv/bin/mypy

test: stack-up
	$(MAKE) --no-print-directory lint
	$(WITH_ENV) $(PY) -m pytest $(PYTEST_ARGS)

bench: stack-up
	$(WITH_ENV) $(PY) -m bench $(BENCH_ARGS)

# Only the growth curves (also the last part of `make bench`); GROWTH_ARGS=--large adds the
# largest size of each system (hours; see README, Development).
bench-growth: stack-up
	$(WITH_ENV) $(PY) -m bench.growth $(GROWTH_ARGS)
