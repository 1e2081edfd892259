# Two commands for a fresh machine:  `make demo` (stack + first backup + Dagster UI)  and  `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
# Load the ports and password the stack wrote, then point Dagster at the project's instance.
WITH_ENV := set -a && . .stack/stack.env && set +a && mkdir -p "$$DAGSTER_HOME" && ln -sf "$(CURDIR)/dagster.yaml" "$$DAGSTER_HOME/dagster.yaml" &&

.PHONY: demo test bench stack-up stack-down

stack-up:
	bash stack/up.sh

stack-down:
	bash stack/down.sh

# Start the stack, take yesterday's backups once through Dagster, then serve the UI with
# schedules and sensors running (http://127.0.0.1:$${DAGSTER_PORT:-3000}).
demo: stack-up
	$(WITH_ENV) .venv/bin/dagster asset materialize -m auction_backup_pipelines.definitions \
	  --select 'postgres/logical_dump,postgres/base_backup' --partition "$$(date -u -d yesterday +%F)"
	$(WITH_ENV) exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$${DAGSTER_PORT:-3000}"

test: stack-up
	$(WITH_ENV) $(PY) -m pytest $(PYTEST_ARGS)

bench: stack-up
	$(WITH_ENV) $(PY) -m bench $(BENCH_ARGS)
