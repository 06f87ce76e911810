# The two commands of README.md. Both create their own environment in .venv.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: run demo test test-fast lint format lock setup system-deps

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

# The quality gates: lint, format and types (CI runs them before the tests).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	PYTHON=$(PY) scripts/typecheck.sh

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test: setup system-deps
	$(PY) -m pytest

# Tests that need no system packages, no broker and no long end-to-end run (markers in pyproject.toml;
# tests/conftest.py fails an unmarked test that reaches RabbitMQ, PostgreSQL or MariaDB).
test-fast: setup
	$(PY) -m pytest -m "not rabbitmq and not databases and not prometheus and not e2e"

# The runtime dependencies the image installs, pinned with hashes (Dockerfile).
lock: setup
	$(PIP) install -q pip-tools
	.venv/bin/pip-compile -q --generate-hashes --strip-extras --no-header --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock pyproject.toml
