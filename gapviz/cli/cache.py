"""``gapviz cache``: show what gapviz's disk cache holds, or clear it.

The cache (downloads, extracted archives, uploads, embeddings) lives in ``--cache-dir``, else
``$GAPVIZ_CACHE_DIR``, else ``~/.cache/gapviz``, and is capped at ``$GAPVIZ_CACHE_MAX_GB``
(default 10) with least recently used entries removed first; see :mod:`gapviz.cache`. Only what
gapviz wrote there is counted or removed: other files in a shared folder, and areas that are
symbolic links, are left alone.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..cache import AREAS, cache_usage, clean_stale, clear_cache
from ..safety import terminal_text

EXAMPLES = """examples:
  gapviz cache                      what the cache holds, per area, against its cap
  gapviz cache clear                delete every download, extraction, upload and embedding
                                    gapviz cached (nothing else in the folder)
  gapviz cache clear --area downloads --area extracted
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``cache`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = subparsers.add_parser("cache", help="show or clear gapviz's disk cache",
                              description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("show", "clear"), default="show",
                   help="show (default) or clear")
    p.add_argument("--area", action="append", choices=list(AREAS),
                   help="clear: only this area (repeatable; default all)")
    p.add_argument("--cache-dir", help="cache root (default $GAPVIZ_CACHE_DIR or ~/.cache/gapviz)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Carry out ``cache show`` / ``cache clear``; returns the exit status."""
    if args.action == "clear":
        count, freed = clear_cache(args.cache_dir, args.area)
        usage = cache_usage(args.cache_dir)
        where = ", ".join(args.area) if args.area else "all areas"
        print(terminal_text(f"removed {count:,} entries ({freed / 1024**2:,.1f} MiB) from "
                            f"{usage.root} ({where})"))
        for area in usage.linked:
            print(f"  left {area}/ alone: a symbolic link, never deleted through")
        return 0
    stale = clean_stale(args.cache_dir)
    usage = cache_usage(args.cache_dir)
    print("\n".join(map(terminal_text, usage.lines())))
    if not usage.entries_by_area:
        print("  (empty)")
    if stale:
        print(f"  removed {len(stale)} temporary file(s) left by interrupted runs")
    return 0
