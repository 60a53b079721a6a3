"""Tests of the poller (issue 6)."""
