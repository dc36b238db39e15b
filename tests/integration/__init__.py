"""Integration tests: code exercised against real, embedded servers."""
