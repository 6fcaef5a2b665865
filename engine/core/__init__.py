"""Shared foundations every feature uses: workspace layout and settings, ids, errors and exit codes, atomic writes, disk space, progress, process identity, interrupts."""
