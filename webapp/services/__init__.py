"""Service layer: accounts, the target catalog (and, later, jobs, approvals, audit)."""
