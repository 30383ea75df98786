"""Filter rules: `column op value` conditions a document must meet to be kept.

A rule is written as the condition to keep (`score >= 0.5`); a document that
fails it gets the negation as its drop reason (`score<0.5`), so that the
reason says what the document had. A null score (the stage did not apply) passes.
Where a stage also says why (a `<column>_reason` column), that follows:
`<column>=false:too_few_sentences`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import yaml

_RULE = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(>=|<=|==|!=|>|<|not in|in)\s*(.+?)\s*$")
_COMPARE = {">=": "greater_equal", ">": "greater", "<=": "less_equal", "<": "less",
            "==": "equal", "!=": "not_equal"}
_NEGATION = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=",
             "in": " not in ", "not in": " in "}


@dataclass(frozen=True)
class Rule:
    column: str
    op: str
    value: object

    @classmethod
    def parse(cls, text: str) -> "Rule":
        match = _RULE.match(str(text))
        if not match:
            raise ValueError(f"cannot parse filter rule {text!r}; write `column op value`, "
                             f"op one of: >= > <= < == != in, not in")
        column, op, raw = match.groups()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"rule {text!r}: cannot read the value {raw!r} (unclosed quote "
                             "or bracket?)") from None
        if op in ("in", "not in"):
            if not isinstance(value, list) or not value or not all(map(_scalar, value)):
                raise ValueError(f"rule {text!r}: `{op}` needs a non-empty list of values "
                                 "like [en, de]")
        elif op in (">=", ">", "<=", "<"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"rule {text!r}: bad threshold {raw!r}, expected a number")
        elif not _scalar(value):
            raise ValueError(f"rule {text!r}: bad value {raw!r}, expected a number, a word "
                             "or true/false")
        return cls(column, op, value)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {_show(self.value)}"

    @property
    def reason(self) -> str:
        """The drop reason of a document that fails this rule."""
        return f"{self.column}{_NEGATION[self.op]}{_show(self.value)}"

    def reasons(self, table: pa.Table) -> pa.Scalar | pa.ChunkedArray:
        """The drop reason of each row that fails this rule: `reason`, followed by the
        row's `<column>_reason` where the table has one and it is set."""
        why = f"{self.column}_reason"
        if why not in table.column_names:
            return pa.scalar(self.reason)
        joined = pc.binary_join_element_wise(self.reason, table.column(why), ":")
        return pc.coalesce(joined, pa.scalar(self.reason))

    def passes(self, table: pa.Table) -> pa.ChunkedArray:
        """True where a row meets the rule; rows with a null value pass."""
        column = table.column(self.column)
        if self.op in ("in", "not in"):
            hit = pc.is_in(column, value_set=pa.array(self.value, type=column.type))
            result = hit if self.op == "in" else pc.invert(hit)
        else:
            result = getattr(pc, _COMPARE[self.op])(column, pa.scalar(self.value, column.type))
        return pc.or_kleene(pc.is_null(column), pc.fill_null(result, True))


def _scalar(value: object) -> bool:
    """A value a column can equal: a string, a bool or a finite number."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):  # as the rule was written (YAML), not Python's True
        return str(value).lower()
    return str(value)
