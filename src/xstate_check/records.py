"""``NamedTuple`` for the package's record classes, without typing's check of each field.

``typing.NamedTuple`` checks every field's annotation (``typing._type_check``). Under
``from __future__ import annotations``, which every module here has, each annotation is a
string, which that check turns into a ``typing.ForwardRef`` by compiling it: about 84
compilations for the seventeen record classes a pre-boot check creates, and a third of what
such a class costs to make (0.88 against 0.35 million instructions for four fields as
``collections.namedtuple`` makes them). Nothing here reads the checked annotations.

The classes made here are those ``typing.NamedTuple`` makes, less that check: the class
``collections.namedtuple`` makes, with the body's defaults, docstring and methods, and
``__annotations__`` as written (strings). Type checkers see ``typing.NamedTuple`` itself.
Generic record classes are not supported (none is declared).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: a child imports this module
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from collections import namedtuple

    #: What a record class's body may not set, and what is not copied from it (as typing).
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                             "_field_defaults", "_make", "_replace", "_asdict", "_source"})
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _RecordMeta(type):
        """Makes ``class R(NamedTuple): ...`` the class ``namedtuple`` makes of its fields."""

        def __new__(cls, typename: str, bases: tuple[type, ...],
                    namespace: dict[str, object]) -> type:
            if bases != (_Record,):
                raise TypeError("a record class inherits from NamedTuple alone")
            annotations = dict(namespace.get("__annotations__", {}))
            with_default: list[str] = []
            for name in annotations:
                if name in namespace:
                    with_default.append(name)
                elif with_default:
                    raise TypeError(f"Non-default namedtuple field {name} cannot follow "
                                    f"default field{'s' if len(with_default) > 1 else ''} "
                                    f"{', '.join(with_default)}")
            made = namedtuple(typename, annotations,
                              defaults=[namespace[name] for name in with_default],
                              module=namespace["__module__"])
            made.__annotations__ = annotations
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in made._fields:
                    setattr(made, key, value)
            return made

    _Record = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def NamedTuple(*args: object, **kwargs: object) -> object:  # noqa: N802
        """Stand for ``typing.NamedTuple`` as a base class (``class R(NamedTuple): ...``)."""
        raise TypeError("records.NamedTuple is a base class only")

    def _mro_entries(bases: tuple[type, ...]) -> tuple[type, ...]:
        return (_Record,)

    NamedTuple.__mro_entries__ = _mro_entries

__all__ = ["NamedTuple"]
