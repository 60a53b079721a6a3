"""Tests of the poller."""
