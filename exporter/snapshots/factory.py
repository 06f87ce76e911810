"""What `snapshots:` in config builds: the redaction key, the redactor and the store backend."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config
from syncwatch.snapshots.redaction import Redactor
from syncwatch.snapshots.sqlite_store import SqliteSnapshotStore
from syncwatch.snapshots.store import SnapshotStore

HASH_KEY_FILE = "snapshot-redaction.key"


def load_hash_key(config: Config) -> bytes:
    """Key of the redaction markers' keyed hash: from config, a file, or generated once per data dir.
    It must stay the same across restarts, or equal values stop showing equal markers."""
    redact = config.snapshots.redact
    if redact.hash_key:
        return redact.hash_key.encode()
    if redact.hash_key_file:
        try:
            key = redact.hash_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                "snapshots.redact.hash_key_file", f"cannot read {redact.hash_key_file}: {exc.strerror}"
            ) from None
        if len(key) < 16:
            raise ConfigError("snapshots.redact.hash_key_file", "the key must be at least 16 bytes")
        return key
    path = Path(config.storage.data_dir) / HASH_KEY_FILE
    try:
        if path.exists():
            return path.read_bytes().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        return key
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError("storage.data_dir", f"cannot create the redaction key {path}: {exc.strerror}") from None


def build_redactor(config: Config, hash_key: bytes | None = None) -> Redactor:
    r = config.snapshots.redact
    key = hash_key if hash_key is not None else load_hash_key(config)
    return Redactor(key, defaults=r.defaults, extra_keys=r.keys, paths=r.paths, patterns=r.patterns)


def build_store(config: Config) -> SnapshotStore:
    s = config.snapshots
    if s.backend.startswith("s3://"):
        from syncwatch.snapshots.s3_store import S3SnapshotStore

        return S3SnapshotStore(s.backend, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    return SqliteSnapshotStore(Path(config.storage.data_dir) / "snapshots.db", max_bytes=s.max_store_bytes)
