"""The shared kernel: knows nothing of leads, documents, tickets or backups (DESIGN.md §3)."""
