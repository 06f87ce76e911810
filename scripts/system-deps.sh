#!/usr/bin/env bash
# Install and start what the test suite needs beyond Python packages. Idempotent.
# Only the tests marked rabbitmq, prometheus or e2e need any of it: `make test-fast` runs without.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v rabbitmqctl >/dev/null || need+=(rabbitmq-server)  # tests marked rabbitmq (guest on 127.0.0.1)
# The web view's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
command -v chromium >/dev/null || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The packages start their own daemons on :9090/:9093; the tests run their own instances.
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl status >/dev/null 2>&1 || (rabbitmq-server -detached && sleep 5)
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  for i in $(seq 1 30); do
    curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break
    sleep 1
  done
fi
