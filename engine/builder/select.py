"""Event selection over small data: ``color == "red"``, ``run >= 784789185 and color != "blue"``.

The trilogy `eval`'d its config; here an expression is parsed by Python's ``ast`` (which
only parses) and walked against a whitelist: boolean ``and``/``or``/``not``, comparisons
(``== != < <= > >=``, ``in`` / ``not in`` a tuple or list of constants), names of small-data
fields and constants. Anything else is refused with a message naming the construct.
Evaluation is vectorised over whole small-data arrays.

The text comes from the command line or a task file, so it is bounded before Python's
parser sees it (``MAX_LENGTH`` characters) and its nesting is bounded while it is walked
(``MAX_DEPTH``): a 5000-deep ``not not ... x`` is one line and exit 2, not a RecursionError.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping

import numpy as np

from engine.core.errors import BadInput

MAX_LENGTH = 4096  # characters of a selection expression
MAX_DEPTH = 32  # nested and/or/not levels: a real selection has a handful

_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class Selection:
    """A parsed selection; ``names`` are the fields it reads."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise BadInput(f"selection must be text, got {type(text).__name__}")
        if len(text) > MAX_LENGTH:
            raise BadInput(
                f"selection is {len(text)} characters long; at most {MAX_LENGTH} are allowed"
            )
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            raise BadInput(f"selection {text!r}: syntax error at column {err.offset}") from None
        except (ValueError, RecursionError, MemoryError) as err:  # NUL bytes; parser limits
            reason = "nested too deeply" if not isinstance(err, ValueError) else "not parsable"
            raise BadInput(f"selection {text!r}: {reason}") from None
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree, 0)

    def _fail(self, node: ast.AST, what: str) -> BadInput:
        return BadInput(
            f"selection {self.text!r}: {what} is not allowed "
            f"(use fields, constants, comparisons, and/or/not)"
        )

    def _check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BadInput(f"selection {self.text!r}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v, depth + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand, depth + 1)
        elif isinstance(node, ast.Compare):
            self._check_operand(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn):
                    if not isinstance(comp, ast.Tuple | ast.List) or not all(
                        isinstance(e, ast.Constant) for e in comp.elts
                    ):
                        raise self._fail(comp, "'in' needs a tuple of constants; this")
                elif type(op) not in _CMP:
                    raise self._fail(op, f"operator {type(op).__name__}")
                else:
                    self._check_operand(comp)
        elif isinstance(node, ast.Name):
            self.names.add(node.id)  # a bare boolean field
        else:
            raise self._fail(node, f"{type(node).__name__} expression")

    def _check_operand(self, node: ast.AST) -> None:
        constant = isinstance(node, ast.Constant) and isinstance(
            node.value, str | int | float | bool
        )
        negative = (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
        )
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        elif not (constant or negative):
            raise self._fail(node, f"{type(node).__name__} operand")

    def evaluate(self, fields: Mapping[str, np.ndarray], n: int, where: str = "") -> np.ndarray:
        missing = sorted(self.names - set(fields))
        if missing:
            avail = ", ".join(sorted(fields)) or "none"
            raise BadInput(
                f"selection {self.text!r} names missing field {missing[0]!r} (available: {avail})",
                where or None,
            )
        try:
            out = self._eval(self._tree, fields)
            return np.broadcast_to(np.asarray(out, dtype=bool), (n,))
        except (TypeError, ValueError, OverflowError) as err:  # e.g. text field < number
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BadInput(
                f"selection {self.text!r} cannot be evaluated on the small data: {reason}",
                where or None,
            ) from None

    def _value(self, node: ast.AST, fields: Mapping[str, np.ndarray]):  # type: ignore[no-untyped-def]
        if isinstance(node, ast.Name):
            return fields[node.id]
        if isinstance(node, ast.UnaryOp):
            return -node.operand.value  # type: ignore[attr-defined]
        return node.value  # type: ignore[attr-defined]

    @staticmethod
    def _coerce(arr, const):  # type: ignore[no-untyped-def]
        """Strings compare with fixed-width byte arrays as bytes, as h5py stores them."""
        if isinstance(const, str) and isinstance(arr, np.ndarray) and arr.dtype.kind == "S":
            return const.encode()
        return const

    def _eval(self, node: ast.AST, fields: Mapping[str, np.ndarray]):  # type: ignore[no-untyped-def]
        if isinstance(node, ast.BoolOp):
            vals = [np.asarray(self._eval(v, fields), dtype=bool) for v in node.values]
            red = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = red(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            return np.logical_not(self._eval(node.operand, fields))
        if isinstance(node, ast.Name):
            return np.asarray(fields[node.id]).astype(bool)
        assert isinstance(node, ast.Compare)
        result = None
        left = self._value(node.left, fields)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                consts = [self._coerce(left, e.value) for e in comp.elts]  # type: ignore[attr-defined]
                part = np.isin(left, consts)
                if isinstance(op, ast.NotIn):
                    part = ~part
                right = None
            else:
                right = self._value(comp, fields)
                fn = _CMP[type(op)]
                if isinstance(right, np.ndarray):
                    part = fn(self._coerce(right, left), right)
                else:
                    part = fn(left, self._coerce(left, right))
            result = part if result is None else np.logical_and(result, part)
            if right is not None:
                left = right
        return result
