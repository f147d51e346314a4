"""TOML inputs (rule files, gate matrices): whatever tomllib refuses is an InputError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xstate_check.errors import InputError
from xstate_check.gate import load_matrix
from xstate_check.tomltext import parse_toml


def test_deep_nesting_is_an_input_error_naming_the_file() -> None:
    """A thousand nested arrays make tomllib recurse too deep; that is bad input, not a crash."""
    with pytest.raises(InputError) as caught:
        parse_toml("x = " + "[" * 1000, "deep.toml")
    assert str(caught.value).startswith("deep.toml: valid TOML (arrays and inline tables")


def test_an_integer_too_long_to_read_is_pointed_at() -> None:
    """An integer of over 4300 digits is refused at its line and column."""
    text = 'a = 1\nb = ' + "9" * 5000 + "\n"
    with pytest.raises(InputError) as caught:
        parse_toml(text, "long.toml")
    assert caught.value.location.line == 2
    assert caught.value.location.column == 5
    assert "at most 4300 digits" in caught.value.expected


def test_decode_errors_draw_the_line_tomllib_counts() -> None:
    """tomllib counts lines by newline only: a U+2028 earlier must not shift the drawn line."""
    text = 'a = "x\u2028y"\nb = = 2\n'
    with pytest.raises(InputError) as caught:
        parse_toml(text, "ff.toml")
    assert caught.value.location.line == 2
    assert caught.value.snippet == "b = = 2"


def test_matrix_reader_refuses_bad_toml_and_special_files(tmp_path: Path) -> None:
    """load_matrix gives InputErrors for deep nesting and for a FIFO, without blocking."""
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 1000, encoding="utf-8")
    with pytest.raises(InputError, match="nested too deeply"):
        load_matrix(deep)
    fifo = tmp_path / "matrix.fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="regular file"):
        load_matrix(fifo)
