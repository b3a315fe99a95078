"""Errors the CLI turns into one clear line and a non-zero exit."""


class NatinvError(Exception):
    """A user-facing error: bad config, missing data, unusable checkpoint."""


class ConfigError(NatinvError):
    pass


class DataNotFound(NatinvError):
    pass


class CheckpointError(NatinvError):
    pass
