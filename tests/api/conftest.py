"""The engine face's tests (engine/api/, headless) use the console tests' workspaces: what
they pin is what the console's workers call."""

from tests.console.conftest import ws  # noqa: F401 (this folder's fixture)
