"""A table of key templates that renames checkpoint keys in either direction.

Each row pairs a template on one side with one on the other, e.g.
`("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight")`; a braced name is a
field that matches the pattern given for it and is copied to the other side unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def _compile(template: str, fields: Mapping[str, str]) -> re.Pattern:
    pattern = re.escape(template)
    for name, field in fields.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{field})")
    return re.compile(f"^{pattern}$")


class KeyMap:
    """Rename keys by a table of `(left, right)` template pairs, left to right (`forward`) or back (`backward`).

    Args:
        rules: `(left template, right template)` pairs; the first row whose template matches is used.
        fields: Each field name -> the regular expression it matches (e.g. `{"i": r"\\d+"}`).

    Example:
        >>> rules = KeyMap([("layers.{i}.wq", "layers.{i}.q_proj")], {"i": r"\\d+"})
        >>> rules.forward("layers.3.wq"), rules.backward("layers.3.q_proj"), rules.forward("norm")
        ('layers.3.q_proj', 'layers.3.wq', None)
    """

    def __init__(self, rules: Sequence[tuple[str, str]], fields: Mapping[str, str]):
        self._forward = [(_compile(left, fields), right) for left, right in rules]
        self._backward = [(_compile(right, fields), left) for left, right in rules]

    @staticmethod
    def _apply(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
        for pattern, template in rules:
            if match := pattern.match(key):
                return template.format(**match.groupdict())
        return None

    def forward(self, key: str) -> str | None:
        """The right-hand name of a left-hand key, or None if no row matches it."""
        return self._apply(key, self._forward)

    def backward(self, key: str) -> str | None:
        """The left-hand name of a right-hand key, or None if no row matches it."""
        return self._apply(key, self._backward)
