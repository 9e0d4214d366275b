"""Plain options get the values Typer's own (pydantic) conversion gives, or its errors."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st
from typer._click import Context
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter

from outbox.cli import app
from outbox.cli.option_values import UNDECIDED, PlainValue, plain_value
from outbox.states import Status

#: Text an operator might type for a number or a choice, odd spellings included.
TYPED = st.text(alphabet="0123456789-+._ eE\t²٣nafidDEAPpx", max_size=8)


@cache
def option(*path: str) -> tuple[_TyperParameter, Context]:
    """The parameter of `outbox <path...>` named last, and a context of its command."""
    *names, name = path
    command: Any = typer.main.get_command(app)
    for step in names:
        command = command.commands[step]
    [param] = [p for p in command.params if p.name == name]
    return param, Context(command)


def both(param: _TyperParameter, ctx: Context, value: Any) -> tuple[Any, Any]:
    """The value (or error message) from Typer's conversion and from plain_value."""
    answers = []
    for conversion in (build_runtime_param, plain_value):
        try:
            answers.append(conversion(param.type_descriptor).coerce(value, param, ctx))
        except typer.BadParameter as error:
            answers.append(("error", error.format_message()))
    return answers[0], answers[1]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("events", "list", "limit"), "10"),
        (("events", "list", "limit"), 50),
        (("events", "list", "limit"), "0"),  # under its minimum: Typer's error
        (("events", "list", "limit"), "1e3"),
        (("events", "list", "status"), ["dead", "PENDING"]),
        (("events", "list", "status"), ("finished",)),
        (("events", "list", "status"), ()),
        (("events", "list", "event_type"), "invoice.*"),
        (("events", "tail", "interval"), "0.5"),
        (("events", "tail", "interval"), 1.0),
        (("events", "tail", "interval"), "0.01"),
        (("events", "list", "as_json"), True),
    ],
)
def test_a_plain_option_gets_typers_value_or_error(path, value):
    param, ctx = option(*path)
    typer_answer, plain_answer = both(param, ctx, value)
    assert plain_answer == typer_answer and type(plain_answer) is type(typer_answer)


def test_the_usual_values_are_converted_without_typers_conversion():
    for path, value, expected in [
        (("events", "list", "limit"), "10", 10),
        (("events", "list", "status"), ("dead",), [Status.DEAD]),
        (("events", "list", "event_type"), "invoice.*", "invoice.*"),
        (("events", "tail", "interval"), "0.5", 0.5),
    ]:
        param, ctx = option(*path)
        conversion = plain_value(param.type_descriptor)
        assert isinstance(conversion, PlainValue)
        assert conversion.converted(value, ctx) == expected


def test_a_path_argument_is_left_to_typer():
    param, _ = option("packs", "load", "file")
    assert not isinstance(plain_value(param.type_descriptor), PlainValue)


NUMBERS_AND_CHOICES = [
    ("events", "list", "limit"),
    ("events", "tail", "interval"),
    ("events", "list", "status"),
]


@settings(max_examples=300, deadline=None)
@given(text=TYPED, path=st.sampled_from(NUMBERS_AND_CHOICES))
def test_whatever_is_typed_the_answer_is_typers(text, path):
    param, ctx = option(*path)
    value = (text,) if param.multiple else text
    decided = PlainValue(
        annotation=param.type_descriptor.annotation,
        parameter_info=param.type_descriptor.parameter_info,
        descriptor=param.type_descriptor,
    ).converted(value, ctx)
    typer_answer, plain_answer = both(param, ctx, value)
    assert plain_answer == typer_answer
    if decided is not UNDECIDED:
        assert decided == typer_answer
