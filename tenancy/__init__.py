"""Tenants' keys and budgets (pure); their queries live in `models.tenants`."""
