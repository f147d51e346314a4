"""records.NamedTuple: the record classes typing.NamedTuple makes, without compiling their
annotations."""

from __future__ import annotations

import pickle
import typing

import pytest

from xstate_check.records import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    label: tuple[str, ...] = ()
    scale: float | None = None

    def moved(self, by: int) -> Point:
        """Return the point moved by ``by``."""
        return self._replace(x=self.x + by)


class TypedPoint(typing.NamedTuple):
    """A point."""

    x: int
    label: tuple[str, ...] = ()
    scale: float | None = None

    def moved(self, by: int) -> TypedPoint:
        """Return the point moved by ``by``."""
        return self._replace(x=self.x + by)


def test_a_record_class_is_what_typing_makes() -> None:
    """Fields, defaults, docstring, methods, repr, equality, the tuple base, module and
    qualified name are those typing.NamedTuple gives the same body."""
    ours, theirs = Point(1, ("a",)), TypedPoint(1, ("a",))
    assert Point._fields == TypedPoint._fields == ("x", "label", "scale")
    assert Point._field_defaults == TypedPoint._field_defaults == {"label": (), "scale": None}
    assert Point.__doc__ == TypedPoint.__doc__ == "A point."
    assert Point.__mro__[1:] == TypedPoint.__mro__[1:] == (tuple, object)
    assert (Point.__module__, Point.__qualname__) == (__name__, "Point")
    assert repr(ours) == repr(theirs).replace("TypedPoint", "Point")
    assert tuple(ours) == tuple(theirs) == (1, ("a",), None)
    assert ours.moved(2) == Point(3, ("a",)) and isinstance(ours.moved(2), Point)
    assert Point._make([4, (), 2.0]).scale == 2.0 and ours._asdict()["label"] == ("a",)
    assert set(vars(Point)) == set(vars(TypedPoint))
    assert pickle.loads(pickle.dumps(ours)) == ours
    # The annotations are kept as written, not turned into ForwardRefs.
    assert Point.__annotations__ == {"x": "int", "label": "tuple[str, ...]",
                                     "scale": "float | None"}


def test_a_record_class_refuses_what_typing_refuses() -> None:
    """A field without a default after one with, a reserved name, another base: TypeError
    or AttributeError, as typing.NamedTuple raises them."""
    with pytest.raises(TypeError, match="Non-default namedtuple field y cannot follow"):
        class Bad(NamedTuple):
            x: int = 0
            y: int  # type: ignore[misc]
    with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute _make"):
        class Worse(NamedTuple):
            x: int

            def _make(self) -> None: ...  # type: ignore[misc]
    with pytest.raises(TypeError):
        class Mixed(NamedTuple, int):  # type: ignore[misc]
            x: int
