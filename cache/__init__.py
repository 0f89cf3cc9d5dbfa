"""Result caches: what makes two requests the same answer (keys and policy, pure), and
which model weights an answer came from (`model_identity`). The queries live in
`models.result_cache`."""
