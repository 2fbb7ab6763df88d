# Single entry point. `make run`: the embedded default end to end. `make test`: the whole test suite.
SHELL := /bin/bash
INV ?= inventories/local
IN_VENV := scripts/in-venv

SCENARIO ?= surge
# `make run REAL_NODE=true`: the stack as pods on the local target's real node (local_real_node_enabled; needs
# root). Empty: the inventory's own value.
REAL_NODE ?=
NODE_ARG := $(if $(REAL_NODE),-e local_real_node_enabled=$(REAL_NODE))

.PHONY: run test bootstrap provision loadtest lint pytest molecule teardown

# The embedded default end to end: provision, then prove it under load (prints where report and plot are).
run: bootstrap provision loadtest

bootstrap:
	scripts/bootstrap.sh

provision:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/site.yml $(NODE_ARG)

loadtest:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/loadtest.yml -e scenario=$(SCENARIO) $(NODE_ARG)

teardown:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/teardown.yml $(NODE_ARG)

# The whole suite: lint, the stack up (idempotent when it already runs), pytest against it, every molecule scenario.
test:
	scripts/stage.sh bootstrap $(MAKE) --no-print-directory bootstrap
	scripts/stage.sh lint $(MAKE) --no-print-directory lint
	scripts/stage.sh provision $(MAKE) --no-print-directory provision
	scripts/stage.sh pytest $(MAKE) --no-print-directory pytest
	scripts/stage.sh molecule $(MAKE) --no-print-directory molecule

lint:
	$(IN_VENV) yamllint -s .
	$(IN_VENV) ruff check .
	$(IN_VENV) ansible-lint

# tests/real_node runs in molecule/real_node's verify, on the node that scenario converges (once for both).
pytest:
	$(IN_VENV) pytest tests --durations=15 --ignore=tests/real_node

molecule:
	$(IN_VENV) scripts/molecule-all.sh
