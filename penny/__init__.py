"""penny: a self-hosted asynchronous batch service for LLM inference, built around cost."""
