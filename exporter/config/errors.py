"""The base error of syncwatch, and the config error that names the key it is about."""


class SyncwatchError(Exception):
    """Base of the errors syncwatch raises on purpose (as opposed to bugs)."""


class ConfigError(SyncwatchError, ValueError):
    """Bad configuration. `key` is the dotted path of the offending key (e.g. `flows.orders.deadline`)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)
