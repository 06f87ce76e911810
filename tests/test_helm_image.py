"""The container image the chart runs (Dockerfile, .dockerignore), checked statically with Docker's
own Dockerfile parser (no Docker engine here), plus a real wheel build from exactly the build
context the Dockerfile sees."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dockerfile
import pytest
import yaml

from syncwatch.config.models import ListenConfig
from syncwatch.settings import load_config

ROOT = Path(__file__).resolve().parent.parent
CHART_VALUES = yaml.safe_load((ROOT / "helm" / "syncwatch" / "values.yaml").read_text())
# Compilers and -dev packages belong in a builder stage, never in the image that runs.
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|[a-z0-9.+-]+-dev|pip3? install|python3? -m pip install|apt-get install|apk add)\b"
)


def stages() -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def final_stage() -> list[dockerfile.Command]:
    return stages()[-1]


def instruction(stage, name):
    found = [c for c in stage if c.cmd == name]
    assert found, f"final stage has no {name}"
    return found[-1]


def test_multi_stage_and_the_final_stage_only_copies_the_built_virtualenv():
    all_stages = stages()
    assert len(all_stages) >= 2
    build_name = all_stages[0][0].value[-1]
    final = final_stage()
    copies_from = [c for c in final if c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)]
    assert [f for c in copies_from for f in c.flags] == [f"--from={build_name}"]
    for cmd in final:
        if cmd.cmd == "RUN":
            text = " ".join(cmd.value)
            assert not BUILD_TOOLS.search(text.replace("pip uninstall", "")), (
                f"build tooling in the final stage: {text}"
            )
    # The project is installed in the builder stage, with pip: dependencies from the hashed lock
    # file, then the project without resolving again.
    build_runs = " ".join(" ".join(c.value) for c in all_stages[0] if c.cmd == "RUN")
    assert "pip install --require-hashes -r requirements.lock" in build_runs
    assert "pip install --no-deps ." in build_runs


def test_slim_base_image():
    for stage in stages():
        base = stage[0].value[0]
        if base.startswith("${"):
            arg = next(c for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd == "ARG")
            base = arg.value[0].split("=", 1)[1]
        assert "slim" in base or "distroless" in base, base


def test_runs_as_the_non_root_user_the_chart_expects():
    user = instruction(final_stage(), "USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root UID, so runAsNonRoot can verify it"
    assert int(uid) == CHART_VALUES["securityContext"]["runAsUser"] == CHART_VALUES["podSecurityContext"]["runAsUser"]
    assert int(gid) == CHART_VALUES["securityContext"]["runAsGroup"]


def test_exposes_the_otlp_and_http_ports_syncwatch_listens_on():
    exposed = {int(p.split("/")[0]) for p in instruction(final_stage(), "EXPOSE").value}
    assert exposed == {4317, 4318, 9873}
    assert exposed == set(CHART_VALUES["ports"].values())


def test_command_matches_the_chart():
    entrypoint = list(instruction(final_stage(), "ENTRYPOINT").value)
    cmd = list(instruction(final_stage(), "CMD").value)
    assert instruction(final_stage(), "ENTRYPOINT").json and instruction(final_stage(), "CMD").json
    assert entrypoint + cmd == ["syncwatch", "run", "--config", "/etc/syncwatch/config.yaml"]


def test_built_in_config_listens_on_all_interfaces_and_keeps_data_on_the_volume(tmp_path):
    heredocs = [(c, h) for c in final_stage() if c.cmd == "COPY" for h in c.heredocs]
    assert len(heredocs) == 1
    cmd, doc = heredocs[0]
    assert cmd.value[-1] == "/etc/syncwatch/config.yaml"
    path = tmp_path / "config.yaml"
    path.write_text(doc.content)
    config = load_config(path, environ={})
    defaults = ListenConfig()
    for key in ("http", "otlp_grpc", "otlp_http"):
        host, _, port = getattr(config.listen, key).rpartition(":")
        assert host == "0.0.0.0" and port == getattr(defaults, key).rpartition(":")[2]
    assert [str(config.storage.data_dir)] == list(instruction(final_stage(), "VOLUME").value)
    health = " ".join(instruction(final_stage(), "HEALTHCHECK").value)
    assert f"127.0.0.1:{config.listen.http.rpartition(':')[2]}/healthz" in health


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        rx = re.escape(glob).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append((negate, re.compile(rx + r"\Z")))
    return patterns


def in_build_context(relpath: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, rx in _dockerignore_patterns():
        if any(rx.match(c) for c in candidates):
            included = negate
    return included


def build_context() -> list[str]:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [f for f in files if (ROOT / f).is_file() and in_build_context(f)]


def test_dockerignore_keeps_the_context_to_what_the_build_reads():
    context = build_context()
    assert "pyproject.toml" in context and "exporter/cli/main.py" in context and "requirements.lock" in context
    assert not [f for f in context if f.startswith(("tests/", ".git/", ".venv/", "helm/", "dashboards/", "alerts/"))]
    assert not [f for f in context if f.endswith((".db", ".pyc"))]
    # Every file the build stage COPYs is in the context.
    for cmd in stages()[0]:
        if cmd.cmd == "COPY" and not cmd.flags:
            for src in cmd.value[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: missing from the repository"
                assert in_build_context(src), f"COPY {src}: excluded by .dockerignore"


def test_the_build_context_builds_a_wheel_with_the_whole_program(tmp_path):
    """`pip install .` of the builder stage, on exactly the files it COPYs (filtered by .dockerignore)."""
    copied = [src for cmd in stages()[0] if cmd.cmd == "COPY" and not cmd.flags for src in cmd.value[:-1]]
    context = tmp_path / "context"
    for rel in build_context():
        if any(rel == src or rel.startswith(src.rstrip("/") + "/") for src in copied):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, context / rel)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("syncwatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    # Every tracked module is in the wheel under the one import name: exporter/ is syncwatch/,
    # collectors/ is syncwatch/collectors/, and nothing is installed as `exporter` or `collectors`.
    for folder, package in (("exporter", "syncwatch"), ("collectors", "syncwatch/collectors")):
        for module in (ROOT / folder).rglob("*.py"):
            rel = module.relative_to(ROOT).as_posix()
            if (
                subprocess.run(["git", "ls-files", "--error-unmatch", rel], cwd=ROOT, capture_output=True).returncode
                == 0
            ):
                installed = package + "/" + module.relative_to(ROOT / folder).as_posix()
                assert installed in names, f"{rel} is not in the image's wheel as {installed}"
    assert not any(n.startswith(("exporter/", "collectors/")) for n in names)
    assert "syncwatch/py.typed" in names
    assert re.search(r"^syncwatch\s*=\s*syncwatch\.cli\.main:main", entry_points, re.M)


@pytest.mark.parametrize(
    "path,expected",
    [
        ("exporter/app.py", True),
        ("collectors/sqs.py", True),
        ("pyproject.toml", True),
        ("README.md", True),
        ("tests/test_helm_chart.py", False),
        ("exporter/__pycache__/app.cpython-311.pyc", False),
        ("ledger.db", False),
        ("helm/syncwatch/values.yaml", False),
        (".git/config", False),
    ],
)
def test_dockerignore_matcher(path, expected):
    assert in_build_context(path) is expected
