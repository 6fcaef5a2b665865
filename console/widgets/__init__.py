"""Panels of the main screen, one module each."""
