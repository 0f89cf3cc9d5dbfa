"""The cost ledger: pricing a job (pure) and rendering a submission's ledger."""
