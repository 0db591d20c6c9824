"""Dollar estimates from token usage and a price table the user supplies.

Prices change often and differ by provider, so rankwise ships none. A price table is JSON
mapping a model name to US dollars per million tokens::

    {"gpt-4o-mini": {"input": 0.15, "output": 0.60},
     "*": {"input": 0.0, "output": 0.0}}

``"*"`` is the fallback for models the table does not name. Pass it with ``--prices FILE``
on the command line or ``RANKWISE_PRICES``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from rankwise.errors import InputError
from rankwise.types import Usage

PRICES_ENV = "RANKWISE_PRICES"


@dataclass(frozen=True)
class Price:
    """US dollars per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise InputError(
                    f"the {name} price must be a finite number of US dollars per million "
                    f"tokens, at least 0, got {value!r}"
                )

    def cost(self, usage: Usage) -> float:
        """Dollars for the tokens in ``usage`` (cache hits cost nothing: they made no call)."""
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / 1e6


class PriceTable:
    """Prices per model name, with an optional ``"*"`` fallback."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = dict(prices)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read a JSON price table; raises :class:`InputError` when it is malformed."""
        try:
            raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as error:  # not JSON, or not UTF-8 text
            raise InputError(f"could not read the price table {path}: {error}") from error
        if not isinstance(raw, dict):
            raise InputError(f"price table {path} must be a JSON object of model -> prices")
        prices = {}
        for model, entry in raw.items():
            try:
                prices[model] = Price(float(entry["input"]), float(entry["output"]))
            except (TypeError, KeyError, ValueError) as error:  # InputError is a ValueError
                raise InputError(
                    f'price table {path}: {model!r} needs {{"input": USD per 1M tokens, '
                    f'"output": USD per 1M tokens}}, each a finite number of at least 0, '
                    f"got {entry!r}"
                ) from error
        return cls(prices)

    @classmethod
    def from_env(cls) -> PriceTable | None:
        """The table named by ``RANKWISE_PRICES``, or None when it is unset."""
        path = os.environ.get(PRICES_ENV)
        return cls.load(path) if path else None

    def price(self, model: str) -> Price | None:
        """The price of ``model`` (or the ``"*"`` fallback), None when neither is listed."""
        return self.prices.get(model) or self.prices.get("*")

    def cost(self, model: str, usage: Usage) -> float | None:
        """Dollars for ``usage`` on ``model``, None when the table has no price for it."""
        price = self.price(model)
        return None if price is None else price.cost(usage)
