"""Reliability and security fault suite: every test injects one fault and records how it was handled."""
