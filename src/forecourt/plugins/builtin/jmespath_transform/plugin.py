"""JMESPath transform: records reshaped by the instance's expression."""

from __future__ import annotations

from typing import Any

import forecourt_plugin
import jmespath


def transform(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: each result that is not an object becomes ``{"value": result}``."""
    config = forecourt_plugin.config()
    expression = jmespath.compile(config["expression"])
    records = payload["records"]
    if config.get("mode", "each") == "all":
        result = expression.search(records)
        if not isinstance(result, list):
            raise ValueError("in mode all the expression must give a list")
        results = result
    else:
        results = [expression.search(record) for record in records]
    return {"records": [_record(item) for item in results if item is not None]}


def _record(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else {"value": item}
