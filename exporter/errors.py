"""Errors that carry the config key they are about, so messages can name it."""


class ConfigError(ValueError):
    """Bad configuration. `key` is the dotted path of the offending key (e.g. `flows.orders.deadline`)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)
