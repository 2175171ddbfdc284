"""The kinds of CMPP body fields (filterd/cmpp/fields.py), checked on every layout."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from filterd.cmpp.fields import Content, Field, Raw, Reserved, Terminals, Text, Uint
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)

CLASSES = [
    Connect,
    ConnectResp,
    Submit,
    SubmitResp,
    Deliver,
    DeliverResp,
    ActiveTest,
    ActiveTestResp,
    Terminate,
    TerminateResp,
]


def test_field_kinds_are_frozen_values() -> None:
    """A field is an immutable value compared by its contents (layouts are shared by all
    messages of a class)."""
    field = Text("src_id", 21)
    assert field == Text("src_id", 21)
    with pytest.raises(dataclasses.FrozenInstanceError):
        field.size = 32  # type: ignore[misc]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("version", [V20, V30])
def test_every_layout_field_names_an_attribute(cls: type, version: int) -> None:
    """Every field of every layout is one of the kinds and (but Reserve) names an attribute
    of its message, with a width the protocol uses."""
    names = {f.name for f in dataclasses.fields(cls)}
    for field in cls.layout(version):
        assert isinstance(field, typing.get_args(Field))
        if isinstance(field, Reserved):
            assert field.size in (1, 8)
            continue
        assert field.name in names
        if isinstance(field, Uint):
            assert field.size in (1, 4, 8)
        elif isinstance(field, Text | Raw | Terminals):
            assert 1 <= field.size <= 32
        else:
            assert field == Content()
