"""The bottom layer: configuration models, durations, JSON paths and errors. Imports nothing else
of syncwatch, so every other package may import it."""

from syncwatch.config.errors import ConfigError, SyncwatchError
from syncwatch.config.load import load_config
from syncwatch.config.models import Config

__all__ = ["Config", "ConfigError", "SyncwatchError", "load_config"]
