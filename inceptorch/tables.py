"""Plain-text and CSV tables, and the number formats every report shares."""

import csv
import io


def shape_text(shape) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def pair_text(pair) -> str:
    """(59, 59) -> '59', (7, 1) -> '7x1', None -> '-': a height and width, one number when equal."""
    return "-" if pair is None else str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def human(n: int) -> str:
    """1498376192 -> '1.50 G': three significant figures are what a reader compares."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
    return str(n)


def text_table(header: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns align left, the rest right.
    ``header`` None: the rows alone."""
    lines = rows if header is None else [header, *rows]
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) if i < left else str(cell).rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
                     for r in lines)


def csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
