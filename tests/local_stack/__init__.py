"""Tests of the local stack scripts under stack/: the real services start and answer."""
