# The two commands of the README, and a few helpers. Everything installs itself.
SEALSTREAM := .venv/bin/sealstream
PYTEST_ARGS ?=

.PHONY: demo test install up down status bench-merkle clean-state

## demo: the main job: install what is missing, bring the stack and a 4-node ledger up, run `sealstream demo`
demo: install
	$(SEALSTREAM) stack up
	$(SEALSTREAM) ledger up
	$(SEALSTREAM) demo

## test: install what is missing, bring the stack up, run every test against it
test: install
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
