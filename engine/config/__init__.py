"""Config: HOCON files and environment overrides → validated, typed settings."""

from engine.config.dump import dump_hocon
from engine.config.loader import ConfigError, load_settings, load_settings_in_background
from engine.config.schema import Settings

__all__ = ["ConfigError", "Settings", "dump_hocon", "load_settings", "load_settings_in_background"]
