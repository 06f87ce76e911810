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

# The flash-sale demo: a simulated integration fails silently, syncwatch catches it (~60 s).
demo: setup
	.venv/bin/syncwatch demo

# Everything the tests talk to for real: Prometheus/Alertmanager binaries, RabbitMQ's management API.
system-deps:
	bash scripts/system-deps.sh

test: setup system-deps
	$(PY) -m pytest
