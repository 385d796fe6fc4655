"""The lock-free sink now lives in `cauce.core.resilience.sinks_collector`."""

from cauce.core.resilience.sinks_collector import CollectorEvents

__all__ = ["CollectorEvents"]
