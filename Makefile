# The two commands of the README, and a few helpers. Everything installs itself.
SEALSTREAM := .venv/bin/sealstream
PYTEST_ARGS ?=
# pytest-xdist workers of `make check` (its tests need no service and share nothing): two per core,
# since some (the edge agent's durable windows, SIGKILLed subprocesses) mostly wait
CHECK_JOBS ?= $(shell echo $$(( $$(nproc) * 2 )))

.PHONY: demo check lint types test soak install up down status bench-merkle clean-state

## demo: the main job: install what is missing, bring the stack and a 4-node ledger up, run `sealstream demo`
demo: install
	$(SEALSTREAM) stack up
	$(SEALSTREAM) ledger up
	$(SEALSTREAM) demo

## check: what to run between changes, no service started: lint, types, and the tests not marked
## `services` (unit tests, the ledger simulator, the pure verifier; tests/conftest.py derives the marks);
## the tests on every core (CHECK_JOBS), mypy beside them, its output after theirs
check: lint
	@log=$$(mktemp); .venv/bin/mypy > $$log 2>&1 & types=$$!; \
	  SEALSTREAM_TEST_TIER=check .venv/bin/pytest -m "not services" -n $(CHECK_JOBS) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "check: PYTEST_ARGS selected no test of this tier"; rc=0; fi; \
	  wait $$types; trc=$$?; echo "check: types (mypy, run beside the tests):"; cat $$log; rm -f $$log; \
	  [ $$rc -eq 0 ] && [ $$trc -eq 0 ]

lint: install
	.venv/bin/ruff check .

types: install
	.venv/bin/mypy

## test: `make check`, then bring the stack up and run every test against it
test: check
	$(SEALSTREAM) stack up
	.venv/bin/pytest -m services $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "test: PYTEST_ARGS selected no test of the services tier"; exit 0; fi; exit $$rc

## soak: SOAK_SEEDS (20,000) seeds of the ledger simulator beyond the 1,500 of `make check`, plus
## SOAK_LONG (200) long chaos runs, one pytest per core; each failing seed prints its replay line
## (SEALSTREAM_SIM_SEED=<seed> .venv/bin/pytest tests/ledger/test_ledger_sim.py). No service started.
SOAK_SEEDS ?= 20000
SOAK_LONG ?= 200
soak: install
	@n=$$(nproc); per=$$(( ($(SOAK_SEEDS) + n - 1) / n )); dir=$$(mktemp -d); pids=""; \
	  echo "soak: $(SOAK_SEEDS) seeds from 1500 and $(SOAK_LONG) long runs on $$n cores"; \
	  for i in $$(seq 0 $$((n - 1))); do \
	    long=0; [ $$i -eq 0 ] && long=$(SOAK_LONG); \
	    SEALSTREAM_TEST_TIER=check SEALSTREAM_SIM_START=$$((1500 + i * per)) SEALSTREAM_SIM_SEEDS=$$per \
	      SEALSTREAM_SIM_LONG_SEEDS=$$long .venv/bin/pytest -q -p no:cacheprovider tests/ledger/test_ledger_sim.py \
	      > $$dir/part$$i.log 2>&1 & pids="$$pids $$!"; \
	  done; rc=0; for p in $$pids; do wait $$p || rc=1; done; \
	  for f in $$dir/part*.log; do grep -E "replay:|passed|failed|error" $$f; done; rm -rf $$dir; exit $$rc

install:
	@infra/bootstrap.sh

up: install
	$(SEALSTREAM) stack up

down:
	@[ -x $(SEALSTREAM) ] && { $(SEALSTREAM) ledger down; $(SEALSTREAM) stack down; } || true

status: install
	$(SEALSTREAM) stack status

bench-merkle: install
	.venv/bin/python bench/merkle.py

## clean-state: stop the stack and delete its data (caches of Kafka jars and MinIO stay)
clean-state: down
	rm -rf .sealstream
