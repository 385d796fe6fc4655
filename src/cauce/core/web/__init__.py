"""HTTP plumbing shared by every context: problem+json errors, middleware, auth, routing."""
