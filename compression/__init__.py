"""Opt-in prompt compression: the long context of a prompt cut down to the sentences that
matter for its question, before the engine reads it."""
