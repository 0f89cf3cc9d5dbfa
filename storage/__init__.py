"""Object storage for outputs: a local directory by default, S3 (any endpoint) by URL."""
