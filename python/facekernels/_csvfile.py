"""The CSV files of the command lines (``me evaluate``, ``metrics vuln``): UTF-8 text, with or without a
byte order mark (spreadsheet programs write one); anything else is refused with the line of the first
byte that is not UTF-8."""

from __future__ import annotations

import codecs
import os
from typing import TextIO


def open_csv(path: str | os.PathLike) -> TextIO:
    """``path`` opened for ``csv.reader``: UTF-8, a leading byte order mark dropped, newlines left to csv.
    Raises OSError as ``open`` does; reading raises UnicodeDecodeError on bytes that are not UTF-8 (see
    :func:`not_utf8`)."""
    return open(path, newline="", encoding="utf-8-sig")


def not_utf8(path: str | os.PathLike) -> tuple[int, str]:
    """Where ``path`` stops being UTF-8: (line number from 1, what was found there, e.g. "byte 0xff").

    Called after reading raised UnicodeDecodeError (whose position counts from the start of a read
    buffer, not of the file): decodes the file again line by line. A newline byte never occurs inside a
    UTF-8 sequence, so the lines split the same in bytes and in text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 0
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as error:
                return line, f"byte 0x{raw[error.start]:02x}"
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return max(line, 1), "a truncated multi-byte sequence at the end of the file"
    return max(line, 1), "text that is not UTF-8"
