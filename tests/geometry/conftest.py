"""The host-compiled kernel fixture of tests/propagate, for the GDML parity test."""

from tests.propagate.conftest import kernel_lib  # noqa: F401 - a fixture
