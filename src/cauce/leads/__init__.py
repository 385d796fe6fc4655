"""Leads: intake, validation, de-duplication, scoring, routing and CRM sync.

This context owns the lead records, their history and their delivery state.
"""
