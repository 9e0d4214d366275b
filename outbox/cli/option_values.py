"""Turning the text of the options into their values without loading pydantic.

Typer (0.29) converts every option's value, its default included, through a pydantic
`TypeAdapter` that it builds for the option: importing pydantic and building the adapters
would be most of the start-up of `events list`, a command meant to answer at once
(docs/performance.md, CLI start-up).

The options here are plain: text, whole numbers, decimals, flags and choices (an Enum or a
Literal), alone or repeated. For those, `PlainValue` converts the values that have only
one meaning, the same way Typer's adapter does (`"10"` is 10, `"dead"` is Status.DEAD), and
hands every other value (`"1e3"`, `"0"` for an option of at least 1, `"finished"` for a
status) to Typer's own adapter, which gives the same value or the same error message as
without this module. tests/cli/test_option_values.py holds the two to the same answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from typer._click import Context
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import choice_coercion_annotation, coerce_cli_choice
from typer._typing import get_args, get_origin
from typer.core import _TyperParameter
from typer.models import ParameterInfo

#: What a conversion answers for a value it leaves to Typer's adapter.
UNDECIDED: Final = object()

#: Whole numbers and decimals as an operator types them: ASCII digits, short enough that
#: no parser could read them differently (pydantic also takes "1_000", " 7 ", "1e3"...).
_WHOLE = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")


@dataclass(frozen=True)
class PlainValue(RuntimeParam):
    """The value of a plain option, converted here when it has one meaning, else by Typer."""

    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        converted = self.converted(value, ctx)
        if converted is UNDECIDED:
            return self.typer_conversion._coerce_value(value, param=param, ctx=ctx)
        return converted

    @cached_property
    def typer_conversion(self) -> RuntimeParam:
        return build_runtime_param(self.descriptor)

    def converted(self, value: Any, ctx: Context) -> Any:
        """The value Typer's adapter would give, or UNDECIDED."""
        if get_origin(self.annotation) is list:
            [item_type] = get_args(self.annotation)
            items = value if isinstance(value, (list, tuple)) else [value]
            converted = [self.item(item, item_type, ctx) for item in items]
            return UNDECIDED if any(item is UNDECIDED for item in converted) else converted
        return self.item(value, self.annotation, ctx)

    def item(self, value: Any, annotation: Any, ctx: Context) -> Any:
        if annotation is str:
            return value if type(value) is str else UNDECIDED
        if annotation is bool:
            return value if type(value) is bool else UNDECIDED
        if annotation is int:
            number = _number(value, int, _WHOLE)
        elif annotation is float:
            number = _number(value, float, _DECIMAL)
        else:
            return self.choice(value, annotation, ctx)
        return number if number is UNDECIDED or self.in_range(number) else UNDECIDED

    def in_range(self, number: float) -> bool:
        low, high = self.parameter_info.min, self.parameter_info.max
        return (low is None or number >= low) and (high is None or number <= high)

    def choice(self, value: Any, annotation: Any, ctx: Context) -> Any:
        choices = choice_coercion_annotation(annotation, self.parameter_info)
        assert choices is not None  # is_plain took only choices besides the above
        try:
            return coerce_cli_choice(value, choices=choices[0], case_sensitive=choices[1], ctx=ctx)
        except ValueError:  # not one of them: Typer's adapter words the error
            return UNDECIDED


def _number(value: Any, kind: type[int] | type[float], written: re.Pattern[str]) -> Any:
    if type(value) is kind or (kind is float and type(value) is int):
        return kind(value)
    if type(value) is str and written.fullmatch(value):
        return kind(value)
    return UNDECIDED


def is_plain(descriptor: TypeDescriptor) -> bool:
    """An option PlainValue converts: no parser of its own, no clamping, not a file."""
    info = descriptor.parameter_info
    if info.parser is not None or info.clamp or descriptor.file_annotation is not None:
        return False
    return _is_plain_type(descriptor.annotation, info)


def _is_plain_type(annotation: Any, info: ParameterInfo) -> bool:
    """Text, number, flag or choice, alone or in a list."""
    if get_origin(annotation) is list:
        [item_type] = get_args(annotation)
        return get_origin(item_type) is not list and _is_plain_type(item_type, info)
    if annotation in (str, bool, int, float):
        return True
    return choice_coercion_annotation(annotation, info) is not None


def plain_value(descriptor: TypeDescriptor) -> RuntimeParam:
    """How one option's values are converted: here if plain, else all by Typer."""
    if is_plain(descriptor):
        return PlainValue(
            annotation=descriptor.annotation,
            parameter_info=descriptor.parameter_info,
            descriptor=descriptor,
        )
    return build_runtime_param(descriptor)


def _runtime_param(self: _TyperParameter) -> RuntimeParam:
    if self._runtime_param is None:
        self._runtime_param = plain_value(self.type_descriptor)
    return self._runtime_param


def convert_plain_options_without_pydantic() -> None:
    """Make every Typer option convert its values through plain_value."""
    _TyperParameter.get_runtime_param = _runtime_param  # type: ignore[method-assign]
