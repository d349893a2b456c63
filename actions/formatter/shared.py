"""Input pieces every formatter schema uses: lenient text, and per-operation required fields."""
from __future__ import annotations

from decimal import Decimal

from marshmallow import ValidationError, fields


class Text(fields.String):
    """A string that also takes a number or boolean (a template can render either)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, Decimal)):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


def require_for_operation(data: dict, needs: dict[str, tuple[str, ...]]) -> None:
    """Raise naming the first field the chosen operation needs and did not get."""
    op = data.get("operation")
    for name in needs.get(op, ()):
        if data.get(name) is None:
            raise ValidationError(f"required when operation is {op}", name)
