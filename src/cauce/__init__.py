"""Cauce: a self-hosted integration hub for leads, documents, tickets and backups."""

__version__ = "0.1.0"
