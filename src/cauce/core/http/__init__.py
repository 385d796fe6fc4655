"""The only place that builds outbound HTTP clients (DESIGN.md §4.5)."""
