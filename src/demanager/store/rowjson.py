"""A row as one JSON array, built by the database: ``row_json(a, b, ...)``.

SQLite writes it with ``json_array``, PostgreSQL with ``json_build_array`` (as text).
A JSON column is embedded as its value, so one decode gives every column, and the
whole row is one string: the exact key of what is built from it (``store/memo.py``)
and one value for the driver to hand over instead of one per column, which was most
of the cost of reading a page of instances (docs/benchmarks.md, Read path).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class row_json(FunctionElement[str]):
    """The values of its arguments as the text of one JSON array, in their order."""

    type = Text()
    inherit_cache = True
    name = "row_json"


@compiles(row_json, "sqlite")
def _sqlite(element: row_json, compiler: SQLCompiler, **kw: Any) -> str:
    # json(): a JSON column's text as the JSON value it holds, not as a string.
    args = ", ".join(
        f"json({compiler.process(c, **kw)})" if isinstance(c.type, JSON)
        else compiler.process(c, **kw)
        for c in element.clauses
    )
    return f"json_array({args})"


@compiles(row_json, "postgresql")
def _postgresql(element: row_json, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(json_build_array({compiler.process(element.clauses, **kw)}) AS TEXT)"


@compiles(row_json)
def _other(element: row_json, compiler: SQLCompiler, **kw: Any) -> str:
    raise NotImplementedError(f"row_json on {compiler.dialect.name}")
