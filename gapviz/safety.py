"""Small defences against hostile input and output, shared by every module that needs them.

- :func:`csv_cell` / :func:`csv_rows`: text cells that a spreadsheet would run as a formula
  (``=HYPERLINK(...)``, ``@SUM(...)``, ``+1+1``, ``-2+3``) get a leading apostrophe, the
  neutralisation spreadsheet tools and OWASP's "CSV injection" advice expect; numbers stay numbers;
- :func:`loads_json`: ``json.loads`` with a nesting limit checked *before* parsing, so a
  ``[[[[...]]]]`` file gives a one-line :class:`JSONInputError` instead of a ``RecursionError``;
- :func:`file_mode` / :func:`set_default_mode`: files written through a temporary name
  (``mkstemp`` creates them 0600) get the permissions an ordinary ``open(path, "w")`` would give;
- :func:`plain_text`: a string from a file (a model name, a key, a caption) made safe to place in
  markdown, where it must show as written instead of becoming a link, an image or HTML;
- :func:`terminal_text` / :func:`markdown_cell`: a string from a file made safe to print on a
  terminal (control characters shown as visible escapes, so a name cannot clear the screen,
  retitle the window or start a forged line) or to place in a markdown table cell;
  :class:`EscapingStream` applies the same rule to everything a command prints.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

#: Deepest JSON nesting accepted (COCO annotations need 3, a webdataset sample 2 or 3).
MAX_JSON_DEPTH = 64

#: First characters that make a spreadsheet read a cell as a formula (or run it via DDE).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


class JSONInputError(ValueError):
    """JSON that cannot be used: not valid, or nested deeper than the limit."""


def csv_cell(value: Any) -> Any:
    """``value`` safe to put in a CSV cell that a spreadsheet may open.

    Text starting with ``= + - @``, a tab or a line break (or their full-width forms) is
    prefixed with ``'``, so the spreadsheet shows it as text instead of evaluating it; text that
    is a plain number (``-0.5``, ``+3``, ``-inf``) is left alone, as are non-text values.
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def csv_rows(rows: Iterable[Iterable[Any]]) -> list[list[Any]]:
    """Every cell of ``rows`` passed through :func:`csv_cell` (for ``csv.writer.writerows``)."""
    return [[csv_cell(c) for c in row] for row in rows]


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)
_BLOCK = 1 << 22


def json_depth(data: bytes | str) -> int:
    """Deepest bracket nesting of JSON text (brackets inside strings do not count).

    Linear time, no recursion: strings are blanked with one regular expression, then the
    running count of ``[{`` minus ``]}`` is taken with numpy. For text that is not valid JSON
    the number is only an estimate; :func:`loads_json` then fails on parsing anyway.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") == 0:
        return 0
    bare = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    deepest = level = 0
    for start in range(0, bare.size, _BLOCK):  # blocks bound the temporary arrays' memory
        block = bare[start:start + _BLOCK]
        step = np.isin(block, _OPEN).astype(np.int64) - np.isin(block, _CLOSE)
        running = np.cumsum(step) + level
        deepest = max(deepest, int(running.max(initial=level)))
        level = int(running[-1])
    return deepest


def loads_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(data)`` refusing nesting deeper than ``max_depth``.

    Raises
    ------
    JSONInputError
        One line: invalid JSON (with the parser's position) or too deep.
    """
    depth = json_depth(data)
    if depth > max_depth:
        raise JSONInputError(f"JSON nested {depth} levels deep, more than the {max_depth} "
                             "accepted; flatten it")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JSONInputError(f"not valid JSON ({err})") from None
    except RecursionError:  # only with an unusually low recursion limit
        raise JSONInputError("JSON nested too deeply to read; flatten it") from None


#: Characters that can make markdown out of a user's string: links and images ``[]!``, bare
#: links ``:`` (``http://``) and ``@`` (e-mail), emphasis and code ``*_`~``, maths ``$``, HTML
#: ``<>``, headings ``#``, tables ``|``, material icons ``:name:``. Parentheses, dots, hyphens
#: and plus signs stay as typed ("sim-CLIP (simulated)", "broken.npz"): without brackets they
#: make no link, and the text is flattened to one line, so they cannot start a list. The one
#: bare link a dot makes, ``www.``, is broken separately.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~$:@])")
_BARE_WWW = re.compile(r"(?i)\b(www)\.")


def plain_text(text: Any, max_length: int | None = 200) -> str:
    """``text`` as literal characters inside markdown (Streamlit's ``st.markdown``, captions).

    Every markdown and HTML special character is backslash-escaped, so ``![x](http://evil/a.png)``
    shows as those characters instead of fetching a remote image, and ``<b>`` is not a tag; line
    breaks become spaces; over ``max_length`` characters the text is cut with an ellipsis.
    """
    flat = " ".join(str(text).split())
    if max_length is not None and len(flat) > max_length:
        flat = flat[:max_length - 1] + "…"
    return _BARE_WWW.sub(r"\1\\.", _MARKDOWN_SPECIAL.sub(r"\\\1", flat))


#: Characters a terminal acts on instead of showing: C0 controls (escape sequences, carriage
#: return, line feed, backspace, bell), DEL, C1 controls (U+009B starts a sequence on some
#: terminals), the Unicode line and paragraph separators, and the bidirectional overrides and
#: isolates that reorder what is shown ("Trojan Source", CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def terminal_text(text: Any, keep: str = "") -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``, ``\\r``,
    ``\\n``, ``\\u202e``), safe to print on a terminal.

    A model name, file name or caption from a file can hold an escape sequence (clear the
    screen, retitle the window), a carriage return or a line break (overwrite or forge a line of
    the output); after this it shows as the characters it holds, on one line. Backslashes are
    left alone, so Windows paths stay readable. ``keep`` lists control characters to let
    through (an output stream keeps its own line breaks).
    """
    text = str(text)
    if keep:
        return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


#: A backslash that markdown would read as an escape: before ASCII punctuation or at the end
#: of a cell (where it would escape the cell's closing ``|``).
_MARKDOWN_ESCAPING_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~]|$)")


def markdown_cell(text: Any) -> str:
    """``text`` for one cell of a markdown table: :func:`terminal_text`, then ``|`` and any
    backslash that would act as an escape are backslash-escaped, so the cell shows as written
    and the table keeps its columns (a bare ``|`` starts a new cell, a trailing ``\\`` eats the
    closing one). Escapes from :func:`terminal_text` (``\\x1b``) stay single."""
    return _MARKDOWN_ESCAPING_BACKSLASH.sub(r"\\\\", terminal_text(text)).replace("|", "\\|")


class EscapingStream:
    """A text stream that writes everything through :func:`terminal_text`.

    Wraps ``sys.stdout`` / ``sys.stderr`` while a command runs, so no output line, whatever
    module printed it, carries a terminal control sequence from a file. ``keep`` are the
    control characters the stream's own layout uses (line feed, tab). With ``rewind``, a
    carriage return that starts a write goes through too: that is how a progress line rewrites
    itself in place, while one inside a printed name would overwrite the line before it.
    Everything else is forwarded to the wrapped stream.
    """

    def __init__(self, stream: Any, keep: str = "\n\t", rewind: bool = False) -> None:
        self.stream = stream
        self.keep = keep
        self.rewind = rewind

    def write(self, text: str) -> int:
        head = "\r" if self.rewind and text.startswith("\r") else ""
        self.stream.write(head + terminal_text(text[len(head):], keep=self.keep))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_umask_lock = threading.Lock()


def file_mode() -> int:
    """Permission bits a new file gets from ``open(path, "w")`` here: 0o666 less the umask."""
    with _umask_lock:  # reading the umask means setting it; keep other threads out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def set_default_mode(path: str | os.PathLike, replacing: str | os.PathLike | None = None) -> None:
    """Give ``path`` (made by ``mkstemp``, mode 0600) ordinary permissions before it is renamed.

    The permissions of ``replacing`` when that file exists (a replaced file keeps its mode),
    else :func:`file_mode`.
    """
    mode = file_mode()
    if replacing is not None:
        try:
            mode = os.stat(replacing).st_mode & 0o7777
        except OSError:
            pass
    os.chmod(path, mode)

