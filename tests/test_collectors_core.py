"""Collector plug-ins, settings validation, adaptive sampling with a controllable clock, the
manager's independent loops, and `collectors test` output."""

from __future__ import annotations

import asyncio
import io
import sys
import textwrap
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from collectors_fakes.harness import run, value  # noqa: F401  (run is a fixture)
from prometheus_client import CollectorRegistry

from syncwatch.cli.collectors import collectors_test
from syncwatch.collectors.config import validate_collectors_section
from syncwatch.collectors.manager import CollectorManager
from syncwatch.collectors.plugins import available_types
from syncwatch.config.errors import ConfigError
from syncwatch.settings import load_config

PLUGIN = """
import asyncio
from syncwatch.collectors.base import Collector, CollectorError, CollectorSettings, DlqDepth, QueueDepth, Sample

SCRIPT = {}  # collector name -> {"depth": {queue: n}, "dlq": n, "fail": reason or None, "sleep": s}


class FakeSettings(CollectorSettings):
    region: str = "lab"


class FakeCollector(Collector):
    broker = "fakebroker"
    Settings = FakeSettings

    async def sample(self):
        plan = SCRIPT.setdefault(self.name, {"depth": {}, "dlq": 0})
        if plan.get("sleep"):
            await asyncio.sleep(plan["sleep"])
        if plan.get("fail"):
            raise CollectorError(plan["fail"], "scripted failure")
        s = Sample(api_calls=1)
        s.queues = [QueueDepth(self.settings.region, q, n) for q, n in plan["depth"].items()]
        s.dlqs = [DlqDepth(self.settings.region, "work-dlq", plan["dlq"], {"work"})]
        if "raw" in plan:  # queues exactly as a careless plug-in might build them
            s.queues = [QueueDepth(*args) for args in plan["raw"]]
        plan["count"] = plan.get("count", 0) + 1
        return s
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A third-party package, installed the way pip lays it out: a module plus a dist-info with entry points."""
    (tmp_path / "swplugin_fake.py").write_text(PLUGIN)
    dist = tmp_path / "swplugin_fake-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: swplugin-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[syncwatch.collectors]\nfakebroker = swplugin_fake:FakeCollector\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("swplugin_fake", None)
    import swplugin_fake

    yield swplugin_fake.SCRIPT
    sys.modules.pop("swplugin_fake", None)


def test_builtins_and_an_installed_plugin_share_one_mechanism(plugin, run):
    assert {"sqs", "servicebus", "rabbitmq", "fakebroker"} <= set(available_types())
    plugin["p"] = {"depth": {"work": 4}, "dlq": 1}
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "fakebroker", "name": "p", "region": "eu"}], {}, reg)
    run.managers.append(manager)
    run(manager.sample_once())
    assert value(reg, "syncwatch_queue_messages", broker="fakebroker", namespace="eu", queue="work") == 4
    assert (
        value(reg, "syncwatch_dlq_messages", broker="fakebroker", namespace="eu", queue="work-dlq", source_queue="work")
        == 1
    )
    # The plug-in's own settings model validates its keys.
    with pytest.raises(ConfigError) as err:
        validate_collectors_section([{"type": "fakebroker", "name": "p", "regoin": "eu"}], {})
    assert err.value.key == "collectors[0].regoin"


@pytest.mark.parametrize(
    "collectors, sampling, key",
    [
        ([{"type": "kafka", "name": "k"}], {}, "collectors[0].type"),
        ([{"name": "k"}], {}, "collectors[0].type"),
        ([{"type": "sqs", "name": "a"}, {"type": "sqs", "name": "a"}], {}, "collectors[1].name"),
        ([{"type": "sqs", "name": "a", "queus": ["x"]}], {}, "collectors[0].queus"),
        ([{"type": "sqs", "name": "a", "queues": []}], {}, "collectors[0].queues"),
        ([{"type": "rabbitmq", "name": "r", "page_size": 900}], {}, "collectors[0].page_size"),
        ([{"type": "rabbitmq", "name": "r", "url": "localhost:15672"}], {}, "collectors[0].url"),
        ([{"type": "rabbitmq", "name": "r", "url": "http://admin:pw@rabbit:15672"}], {}, "collectors[0].url"),
        ([{"type": "servicebus", "name": "s"}], {}, "collectors[0].connection_string"),
        ([{"type": "rabbitmq", "name": "r", "timeout": "10s"}], {}, "collectors[0].timeout"),
        ([], {"interval": "5s", "fast_interval": "10s"}, "sampling.fast_interval"),
        ([], {"interval": "fast"}, "sampling.interval"),
        ([], {"calm": "5m"}, "sampling.calm"),
        (
            [],
            {"high_traffic_windows": [{"days": ["sat"], "start": "09:00", "end": "21:00", "timezone": "Mars/Olympus"}]},
            "sampling.high_traffic_windows[0].timezone",
        ),
        (
            [],
            {"high_traffic_windows": [{"days": ["caturday"], "start": "09:00", "end": "21:00"}]},
            "sampling.high_traffic_windows[0].days",
        ),
        ([], {"high_traffic_windows": [{"start": "25:00", "end": "21:00"}]}, "sampling.high_traffic_windows[0].start"),
    ],
)
def test_bad_settings_name_the_key(collectors, sampling, key):
    with pytest.raises(ConfigError) as err:
        validate_collectors_section(collectors, sampling)
    assert err.value.key == key
    assert "pw@" not in str(err.value)


def test_config_file_errors_name_the_key_and_hide_secrets(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent("""
        collectors:
          - type: rabbitmq
            name: r
            password: [hunter2]
    """)
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.key == "collectors[0].password" and "hunter2" not in str(err.value)
    path.write_text(
        textwrap.dedent("""
        collectors:
          - {type: rabbitmq, name: r, vhosts: [shop], queues: ["orders-*"]}
          - {type: sqs, name: aws, region: eu-west-1, queues: ["orders-*.fifo"], dead_letter_queues: [legacy-dlq]}
        sampling:
          interval: 1m
          fast_interval: 10s
          high_traffic_windows:
            - {name: weekend-flash-sale, days: [weekend], start: "09:00", end: "23:00", timezone: Europe/Berlin}
    """)
    )
    load_config(path, environ={})


def at(text: str, tz: str = "Europe/Berlin") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_fast_while_growing_and_back_after_five_calm_minutes(plugin, run):
    clock = Clock(at("2026-11-25T12:00:00"))  # a Wednesday
    plugin["p"] = {"depth": {"work": 5}, "dlq": 0}
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "fakebroker", "name": "p"}], {}, reg, clock=clock)
    run.managers.append(manager)

    def step(seconds: float, depth: int | None = None, dlq: int | None = None) -> float:
        clock.t += seconds
        if depth is not None:
            plugin["p"]["depth"]["work"] = depth
        if dlq is not None:
            plugin["p"]["dlq"] = dlq
        run(manager.sample_once())
        return value(reg, "syncwatch_collector_interval_seconds", collector="p")

    assert step(0) == 60
    assert step(60) == 60  # steady
    assert step(60, depth=9) == 10  # growing
    assert step(10, depth=9) == 10
    assert step(4 * 60) == 10  # 4m10s calm: still fast
    assert step(50) == 60  # 5 calm minutes since the last growth
    assert step(60, depth=3) == 60  # draining is not a trigger
    # A non-empty DLQ keeps it fast for as long as it holds messages.
    assert step(60, dlq=2) == 10
    assert step(30 * 60) == 10
    assert step(60, dlq=0) == 10
    assert step(5 * 60) == 60


def test_high_traffic_windows_in_their_time_zone(plugin, run):
    windows = [
        {
            "name": "weekend-flash-sale",
            "days": ["sat", "sun"],
            "start": "09:00",
            "end": "21:00",
            "timezone": "Europe/Berlin",
        },
        {
            "name": "friday-night-batch",
            "days": ["fri"],
            "start": "22:00",
            "end": "02:00",
            "timezone": "America/New_York",
        },
    ]
    clock = Clock(0)
    plugin["p"] = {"depth": {"work": 5}, "dlq": 0}
    reg = CollectorRegistry()
    manager = CollectorManager(
        [{"type": "fakebroker", "name": "p"}],
        {"high_traffic_windows": windows, "interval": "2m", "fast_interval": "15s"},
        reg,
        clock=clock,
    )
    run.managers.append(manager)
    cases = [
        (at("2026-11-28T08:59:00"), 120),  # Saturday in Berlin, before the sale
        (at("2026-11-28T09:00:00"), 15),
        (at("2026-11-29T20:59:00"), 15),  # Sunday
        (at("2026-11-29T21:00:00"), 120),
        (at("2026-11-28T09:30:00", "UTC"), 15),  # 10:30 in Berlin
        (at("2026-11-27T22:30:00", "America/New_York"), 15),  # Friday night in New York
        (at("2026-11-28T01:59:00", "America/New_York"), 15),  # past midnight: still Friday's window
        (at("2026-11-28T02:00:00", "America/New_York"), 120),
        (at("2026-11-26T23:00:00", "America/New_York"), 120),  # Thursday night
    ]
    for t, expected in cases:
        clock.t = t
        run(manager.sample_once())
        assert value(reg, "syncwatch_collector_interval_seconds", collector="p") == expected, datetime.fromtimestamp(t)


def test_growth_trigger_can_be_switched_off(plugin, run):
    clock = Clock(at("2026-11-25T12:00:00"))
    plugin["p"] = {"depth": {"work": 1}, "dlq": 3}
    reg = CollectorRegistry()
    manager = CollectorManager(
        [{"type": "fakebroker", "name": "p"}],
        {"fast_when_depth_growing": False, "fast_when_dlq_not_empty": False},
        reg,
        clock=clock,
    )
    run.managers.append(manager)
    for depth in (1, 50, 500):
        plugin["p"]["depth"]["work"] = depth
        clock.t += 60
        run(manager.sample_once())
        assert value(reg, "syncwatch_collector_interval_seconds", collector="p") == 60


def test_loops_run_independently_a_stuck_broker_delays_nobody(plugin, run):
    plugin["quick"] = {"depth": {"work": 1}, "dlq": 0}
    plugin["stuck"] = {"depth": {}, "dlq": 0, "sleep": 30}
    plugin["broken"] = {"depth": {}, "dlq": 0, "fail": "throttled"}
    reg = CollectorRegistry()
    manager = CollectorManager(
        [{"type": "fakebroker", "name": n, "timeout": "0.5s"} for n in ("quick", "stuck", "broken")],
        {"interval": "1s", "fast_interval": "1s"},
        reg,
    )

    async def scenario():
        await manager.start()
        await asyncio.sleep(3.3)
        started = time.monotonic()
        await manager.stop()
        return time.monotonic() - started

    stop_took = run(scenario())
    assert plugin["quick"]["count"] >= 3
    assert value(reg, "syncwatch_collector_up", collector="quick") == 1
    assert value(reg, "syncwatch_collector_up", collector="stuck") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="stuck", reason="timeout") >= 2
    assert value(reg, "syncwatch_collector_errors_total", collector="broken", reason="throttled") >= 3
    assert stop_took < 1.0


@pytest.mark.parametrize(
    "raw",
    [
        [(5, "work", 1)],  # a numeric namespace
        [("lab", None, 1)],
        [("lab", "work", float("nan"))],
        [("lab", "work", -1)],
        [("lab", "work", "7")],
        [("lab", "\ud800", 1)],  # not encodable as UTF-8
    ],
)
def test_a_plugins_odd_sample_fails_that_collector_only(plugin, run, raw):
    """Every plug-in's sample is checked before it is exported: an odd one is that collector's
    bad_response, and /metrics keeps rendering for everything else."""
    from prometheus_client import generate_latest

    plugin["odd"] = {"depth": {}, "dlq": 0, "raw": raw}
    plugin["fine"] = {"depth": {"work": 2}, "dlq": 0}
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "fakebroker", "name": n} for n in ("odd", "fine")], {}, reg)
    run.managers.append(manager)
    run(manager.sample_once())
    assert value(reg, "syncwatch_collector_up", collector="odd") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="odd", reason="bad_response") == 1
    assert value(reg, "syncwatch_collector_api_calls_total", collector="odd") == 1
    assert value(reg, "syncwatch_collector_up", collector="fine") == 1
    assert b'syncwatch_queue_messages{broker="fakebroker",namespace="lab",queue="work"} 2.0' in generate_latest(reg)


def test_collectors_test_prints_discovery_and_dlq_links(plugin):
    plugin["p"] = {"depth": {"work": 4}, "dlq": 2}
    plugin["down"] = {"depth": {}, "dlq": 0, "fail": "unauthorized"}
    out = io.StringIO()
    assert collectors_test([{"type": "fakebroker", "name": "p"}], {}, out) == 0
    text = out.getvalue()
    assert "p (fakebroker" in text and "lab work" in text
    assert "lab work-dlq: 2 (source: work)  <-- not empty" in text
    assert "would sample every 10s (DLQ not empty: work-dlq)" in text
    out = io.StringIO()
    assert collectors_test([{"type": "fakebroker", "name": "p"}, {"type": "fakebroker", "name": "down"}], {}, out) == 1
    assert "down (fakebroker): DOWN — unauthorized: scripted failure" in out.getvalue()
    assert "1 of 2 collectors up" in out.getvalue()
    out = io.StringIO()
    assert collectors_test([{"type": "nope", "name": "x"}], {}, out) == 2
    assert "collectors[0].type" in out.getvalue()
