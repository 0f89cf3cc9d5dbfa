"""Signed webhook callbacks: Standard Webhooks signing, the retry schedule and the SSRF
policy (pure), and the outbox delivery loop that posts from Postgres (the I/O shell)."""
