"""A local, durable emulator of the OpenAI and Azure OpenAI Files + Batches APIs, one process
for every provider (``batchpipe emulator``; ``batchpipe openai-emulator`` is an alias)."""
