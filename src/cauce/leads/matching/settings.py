"""De-duplication settings live in the app settings (`CAUCE_LEADS__DEDUPE__...`)."""

from cauce.core.config_leads import DedupeSettings

__all__ = ["DedupeSettings"]
