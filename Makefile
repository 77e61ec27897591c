# The two commands of the README, and a few helpers. Everything installs itself.
SEALSTREAM := .venv/bin/sealstream
PYTEST_ARGS ?=

.PHONY: demo check lint types test install up down status bench-merkle clean-state

## demo: the main job: install what is missing, bring the stack and a 4-node ledger up, run `sealstream demo`
demo: install
	$(SEALSTREAM) stack up
	$(SEALSTREAM) ledger up
	$(SEALSTREAM) demo

## check: what to run between changes, no service started: lint, types, and the tests not marked
## `services` (unit tests, the ledger simulator, the pure verifier; tests/conftest.py derives the marks)
check: lint types
	@SEALSTREAM_TEST_TIER=check .venv/bin/pytest -m "not services" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "check: PYTEST_ARGS selected no test of this tier"; exit 0; fi; exit $$rc

lint: install
	.venv/bin/ruff check .

types: install
	.venv/bin/mypy

## test: `make check`, then bring the stack up and run every test against it
test: check
	$(SEALSTREAM) stack up
	.venv/bin/pytest $(PYTEST_ARGS)

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
