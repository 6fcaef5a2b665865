"""The daemon's tests (engine/daemon/) use the pipeline tests' workspaces and run on SQLite
and on PostgreSQL, as the pipeline's do."""

from tests.pipeline.conftest import _both_backends, ws  # noqa: F401 (this folder's fixtures)
