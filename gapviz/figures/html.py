"""Styling of the exported one-page HTML report (:mod:`gapviz.report`), its colours from
:mod:`gapviz.figures.palette`."""

from __future__ import annotations

from . import palette

#: The report's style sheet (the content of its ``<style>`` element).
REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;
color:%(text)s;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid %(rule)s}
.meta{color:%(muted)s} .badge{background:%(badge_bg)s;color:%(badge_text)s;border-radius:4px;padding:.15rem .5rem;
font-weight:600;font-size:.85rem} table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border-bottom:1px solid %(rule)s;padding:.3rem .7rem;text-align:right} th:first-child,td:first-child{text-align:left}
td.best{font-weight:700;color:%(best)s} .note{color:%(muted)s;font-size:.85rem}
""" % {"text": palette.REPORT_TEXT, "rule": palette.REPORT_RULE, "muted": palette.REPORT_MUTED,
       "badge_bg": palette.REPORT_BADGE_BG, "badge_text": palette.REPORT_BADGE_TEXT,
       "best": palette.REPORT_BEST}
