"""Local stand-ins for outside systems (a HubSpot-compatible CRM), with fault injection."""
