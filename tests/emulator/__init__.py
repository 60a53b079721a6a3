"""Tests of the local OpenAI Files + Batches API emulator, driven through the openai SDK."""
