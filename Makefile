# The two commands of README.md. Both create their own environment in .venv.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: run demo test setup system-deps

.venv/.installed: pyproject.toml instrumentation/pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q -e ./instrumentation
	touch $@

setup: .venv/.installed

run: setup
	.venv/bin/syncwatch run

# Everything the tests talk to for real: Prometheus/Alertmanager binaries, RabbitMQ's management API.
system-deps:
	bash scripts/system-deps.sh

test: setup system-deps
	$(PY) -m pytest
