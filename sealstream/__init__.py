"""sealstream: tamper-evident industrial telemetry (console entry point and settings)."""

from .settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
