"""Wire compatibility with hosted batch APIs (OpenAI Batch, Anthropic Message Batches):
how penny's job and submission states read there, and how results are rendered. Pure."""
