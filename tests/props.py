"""Property-based testing of boundary parsers: any input gives a value or BadInput.

Every parser where outside input enters skydeck (lock JSON, manifest lines, RetDef
attributes, delivery names, ``--select``, scene TOML, skydeck.toml, CLI numbers) must turn
any input into a value or the project's ``BadInput`` with one line naming the problem, never
another exception. ``total`` states that contract once, so each parser's Hypothesis test is
one line of strategy and one call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

from engine.core.errors import BadInput

T = TypeVar("T")

# CI is a 2-core VM: no per-example deadline (a slow example is not a bug), a fixed number
# of examples so the suite's time stays predictable. Under CI (CI=true) the examples are
# derandomized so main stays green on a given commit; on a developer's machine each run
# explores new inputs, which is where new bugs are found.
settings.register_profile(
    "skydeck",
    deadline=None,
    max_examples=150,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("skydeck")


def total(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | BadInput:
    """Call a boundary parser; return its value or its BadInput (checked to be one line).

    Any other exception propagates, which is what fails the property.
    """
    try:
        return parse(*args, **kwargs)
    except BadInput as err:
        text = str(err)
        assert text and "\n" not in text, f"BadInput must be one non-empty line: {text!r}"
        return err
