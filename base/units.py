"""Amounts of ether as users type and read them: `--stake 2.5` in, "2.5 ETH" out; wei only inside. A base
module (standard library only), shared by every command line."""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation

ETH = 10**18


def parse_eth(text: str) -> int:
    """An argparse `type`: a positive amount of ETH ("2", "0.5", "1e-3") → wei, exactly (no float rounding)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of ETH") from err
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the amount must be a positive number of ETH")
    wei = value * ETH
    if wei != wei.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text!r} has more than 18 decimals")
    return int(wei)


def eth(wei: int) -> str:
    """wei → ETH for people: "2", "0.5", "1000.0123" (at most 6 significant decimals, never scientific)."""
    amount = Decimal(wei) / ETH
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    if text in ("0", "-0") and wei:
        return format(amount, "f")  # dust: every digit, rather than a misleading 0
    return text
