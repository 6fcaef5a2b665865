"""The host-compiled kernel and scene-writing fixtures of tests/propagate, for the GDML
parity test and the flat tracer's tests."""

from tests.propagate.conftest import kernel_lib, write_scene  # noqa: F401 - fixtures
