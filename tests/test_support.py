"""The suite's own guards and harness: a fast test cannot reach RabbitMQ or a database unnoticed, and the in-process
ledger harness shows what the sidecar would (the fake clock decides when a deadline passes)."""

from __future__ import annotations

import _socket
import socket

import pytest
from otel_helpers import Integration
from ports import free_port

TX = dict(flow="orders", source="storefront", destination="erp")


@pytest.mark.parametrize(
    "port, marker", [(5672, "rabbitmq"), (15672, "rabbitmq"), (5432, "databases"), (3306, "databases")]
)
def test_an_unmarked_test_that_reaches_a_service_fails_loudly(port, marker):
    with pytest.raises(AssertionError, match=rf"127.0.0.1:{port} but is not marked @pytest.mark.{marker}"):
        socket.create_connection(("127.0.0.1", port), timeout=0.2)


@pytest.mark.databases
def test_the_databases_marker_admits_only_the_databases():
    with pytest.raises(AssertionError, match="not marked @pytest.mark.rabbitmq"):
        socket.create_connection(("127.0.0.1", 15672), timeout=0.2)


def test_other_ports_are_not_guarded():
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free_port()), timeout=0.2)


@pytest.mark.rabbitmq
@pytest.mark.databases
def test_a_test_marked_for_every_service_connects_unguarded():
    assert socket.socket.connect is _socket.socket.connect


def test_the_ledger_harness_goes_overdue_on_the_fake_clock_only(make_ledger, clock):
    h = make_ledger({"flows": {"orders": {"destinations": ["erp"], "deadline": "30s"}}}, clock=clock)
    it = Integration(h)
    it.source("order-1", "orders", clock())
    it.close()
    assert h.metric("syncwatch_transactions_pending", **TX) == 1
    h.advance(29.75)
    assert h.metric("syncwatch_transactions_overdue", **TX) == 0
    h.advance(0.5)
    assert h.metric("syncwatch_transactions_overdue", **TX) == 1
    assert h.metric("syncwatch_spans_total", result="correlated") == 1
    assert h.metric("syncwatch_flow_deadline_seconds", flow="orders") == 30


def test_the_ledger_harness_wait_for_fails_when_the_value_never_comes(ledger):
    with pytest.raises(AssertionError, match=r"expected 1 within 2s \(fake clock\)"):
        ledger.wait_for("syncwatch_transactions_overdue", 1, timeout=2, **TX)
