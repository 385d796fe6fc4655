"""Security: API keys and scopes, hashing, redaction of secrets and personal data."""
