"""Quote a run's headline figures into a Markdown file (the README) between two markers.

``python -m qgraph.reproduce.quote RESULTS_JSON TARGET_MD`` (``make readme-results``)
replaces what lies between ``<!-- results:start`` and ``<!-- results:end -->`` in
``TARGET_MD`` with the per-arm table, the seed-spread note and the claims table, rendered from
``results.json`` by the same functions that write ``results.md``, so the README never holds a
figure that a run did not produce.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from qgraph.errors import InputError
from qgraph.reproduce.claims import claims_markdown
from qgraph.reproduce.tables import results_table_rows, spread_note

START = "<!-- results:start"
END = "<!-- results:end -->"


def headline_markdown(results: dict[str, Any]) -> str:
    """The per-arm table, the seed-spread note and the claims table of one run."""
    header, rows = results_table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", spread_note(results["table"]), "", claims_markdown(results["claims"])]
    return "\n".join(lines)


def quote_into(text: str, results: dict[str, Any], source: str) -> str:
    """``text`` with the block between the markers replaced by ``results``' headline."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), flags=re.S)
    if not pattern.search(text):
        raise InputError(
            f"no '{START} ... {END}' block to fill; add the two marker lines where the "
            "figures should go."
        )
    block = (
        f"{START} (generated from {source} by `make readme-results`; not typed) -->\n"
        f"{headline_markdown(results)}\n{END}"
    )
    return pattern.sub(lambda _: block, text, count=1)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m qgraph.reproduce.quote RESULTS_JSON TARGET_MD``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a run's results.json")
    parser.add_argument("target", type=Path, help="the Markdown file with the markers")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    args.target.write_text(quote_into(args.target.read_text(), results, str(args.results)))


if __name__ == "__main__":
    main()
