# Single entry point. `make run`: the embedded default end to end. `make test`: the whole test suite.
SHELL := /bin/bash
INV ?= inventories/local
IN_VENV := scripts/in-venv

.PHONY: run test bootstrap provision lint pytest molecule teardown

run: bootstrap provision

bootstrap:
	scripts/bootstrap.sh

provision:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/site.yml

teardown:
	$(IN_VENV) ansible-playbook -i $(INV) playbooks/teardown.yml

test: bootstrap lint pytest molecule

lint:
	$(IN_VENV) yamllint -s .
	$(IN_VENV) ruff check .
	$(IN_VENV) ansible-lint

pytest:
	$(IN_VENV) pytest tests

molecule:
	$(IN_VENV) scripts/molecule-all.sh
