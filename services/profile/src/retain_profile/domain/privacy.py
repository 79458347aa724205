"""What a PDPA erasure keeps: the non-personal event properties the features are computed from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Amounts, categories, scores and channels feed the anonymised aggregates; free text, names, addresses,
# order and product identifiers could single the person out and go.
KEPT_PROPERTIES = frozenset(
    {"revenue", "total", "discount", "currency", "category", "score", "sentiment", "channel", "status"}
)
KEPT_PRODUCT_FIELDS = frozenset({"category", "price", "quantity"})


def scrub_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in properties.items() if k in KEPT_PROPERTIES and not isinstance(v, dict | list)}
    products = properties.get("products")
    if isinstance(products, list):
        kept["products"] = [
            {k: v for k, v in p.items() if k in KEPT_PRODUCT_FIELDS} for p in products if isinstance(p, Mapping)
        ]
    return kept
