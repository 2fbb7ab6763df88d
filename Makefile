# Single entry point. `make run`: the embedded default end to end. `make test`: the whole test suite.
SHELL := /bin/bash
INV ?= inventories/local
IN_VENV := scripts/in-venv

SCENARIO ?= surge

.PHONY: run test bootstrap provision loadtest lint pytest molecule teardown

# The embedded default end to end: provision, then prove it under load (prints where report and plot are).
run: bootstrap provision loadtest

bootstrap:
	scripts/bootstrap.sh

provision:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/site.yml

loadtest:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/loadtest.yml -e scenario=$(SCENARIO)

teardown:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/teardown.yml

# The whole suite: lint, the stack up (idempotent when it already runs), pytest against it, every molecule scenario.
# molecule/real_node brings up a real node of its own, which cannot run beside the stack's (two kube-proxies in one
# network namespace replace each other's iptables chains; roles/real_node's preflight refuses it): the stack is
# torn down before that scenario, last. `make run` brings it back.
test:
	scripts/stage.sh bootstrap $(MAKE) --no-print-directory bootstrap
	scripts/stage.sh lint $(MAKE) --no-print-directory lint
	scripts/stage.sh provision $(MAKE) --no-print-directory provision
	scripts/stage.sh pytest $(MAKE) --no-print-directory pytest
	scripts/stage.sh molecule $(MAKE) --no-print-directory molecule MOLECULE_ARGS="--skip real_node"; rc=$$?; \
	scripts/stage.sh teardown $(MAKE) --no-print-directory teardown \
	  && scripts/stage.sh molecule-real-node $(MAKE) --no-print-directory molecule MOLECULE_ARGS=real_node; \
	rc2=$$?; [ $$rc -eq 0 ] && [ $$rc2 -eq 0 ]

lint:
	$(IN_VENV) yamllint -s .
	$(IN_VENV) ruff check .
	$(IN_VENV) ansible-lint

# tests/real_node runs in molecule/real_node's verify, on the node that scenario converges (once for both).
pytest:
	$(IN_VENV) pytest tests --durations=15 --ignore=tests/real_node

# MOLECULE_ARGS: scenario names, or --skip NAME (scripts/molecule-all.sh); empty: every scenario.
MOLECULE_ARGS ?=
molecule:
	$(IN_VENV) scripts/molecule-all.sh $(MOLECULE_ARGS)
