"""CSV exports: streamed in constant memory, and safe to open in a spreadsheet.

Every CSV the services serve (recall campaign reports, stock counts, stock aging, sell-through, the
theft registry's exports) is written here: rows are encoded a few hundred at a time and handed to the
response as they come, so an export of a million rows holds one chunk, not the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from fastapi.responses import StreamingResponse

CHUNK_ROWS = 500
FORMULA_STARTS = ("=", "+", "-", "@")


def cell(value) -> str:
    """One value as a CSV cell: empty for None, ISO 8601 for times, numbers as numbers (a negative
    number is not a formula), and text a spreadsheet would run as a formula prefixed with ``'``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def stream(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """The header, then the rows (cells already made with ``cell``), CHUNK_ROWS rows per piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for n, row in enumerate(rows, start=1):
        writer.writerow(row)
        if n % CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def download(pieces: Iterable[str], filename: str) -> StreamingResponse:
    """A streamed CSV attachment; ``filename`` keeps letters, digits and ``-_.`` only."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in filename)
    return StreamingResponse(pieces, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{safe}"'})
