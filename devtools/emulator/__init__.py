"""A local, durable emulator of the OpenAI Files + Batches API (``batchpipe openai-emulator``)."""
