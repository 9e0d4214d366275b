"""Which schemas this code runs on: the head, and 0013, the online move's middle step."""

from __future__ import annotations

from outbox.schema import SERVING_BEFORE_HEAD, SchemaState, code_heads


def test_the_schema_check_accepts_the_head():
    state = SchemaState(code_heads(), code_heads())
    assert state.problem is None and not state.before_swap


def test_the_schema_check_accepts_0013_and_says_the_swap_is_to_come():
    state = SchemaState((SERVING_BEFORE_HEAD,), code_heads())
    assert state.problem is None and state.before_swap


def test_the_schema_check_refuses_the_revision_before_0013():
    state = SchemaState(("0012_in_line_objects",), code_heads())
    assert state.problem is not None and "outbox migrate" in state.problem
