"""Config: HOCON files and environment overrides → validated, typed settings."""

from engine.config.dump import dump_hocon
from engine.config.loader import ConfigError, Loaded, load_settings, load_settings_in_background, load_settings_with_warnings
from engine.config.schema import Settings

__all__ = ["ConfigError", "Loaded", "Settings", "dump_hocon", "load_settings", "load_settings_in_background",
           "load_settings_with_warnings"]
