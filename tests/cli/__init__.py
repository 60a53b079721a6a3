"""Tests of the user-facing CLI: dev, submit, results."""
