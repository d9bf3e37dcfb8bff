"""CSV outputs that are safe to open in a spreadsheet, written atomically.

A cell that starts with ``= + - @``, a tab or a carriage return is a formula to Excel, LibreOffice and
Google Sheets (a class folder named ``=cmd|' /C calc'!A0`` would run on opening); such text cells get a
leading apostrophe, as OWASP recommends. Numbers are written as numbers.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from typing import Iterable

from featpipe import atomic

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
STDOUT = "-"  # as a path: standard output, written once every row is known


def safe_cell(value):
    """`value`, with text that a spreadsheet would run as a formula prefixed by an apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: str | os.PathLike, header: list[str], rows: Iterable[list]) -> None:
    """Header plus rows, every text cell made safe; the file appears complete or not at all.
    `path` "-" is standard output."""
    stdout = os.fspath(path) == STDOUT
    with contextlib.nullcontext(sys.stdout) if stdout else atomic.atomic_open(path, "w", newline="",
                                                                                 encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([safe_cell(cell) for cell in header])
        for row in rows:
            writer.writerow([safe_cell(cell) for cell in row])
