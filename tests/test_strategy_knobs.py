"""The typed knob contract over the whole registry: each strategy's knobs are a frozen dataclass whose
declared defaults are valid, whose values reach `self.knobs`, and whose bad values are one `UserError` from the
shared option validator naming `strategy_knobs.<strategy>.<knob>`."""

from __future__ import annotations

import dataclasses

import pytest

from tune_mtl import strategies
from tune_mtl.core.errors import UserError
from tune_mtl.strategies.base import StrategyKnobs

ALL = strategies.names()
KNOBS = [(name, key) for name in ALL for key in strategies.get(name).knob_specs()]


@pytest.mark.parametrize("name", ALL)
def test_knobs_are_a_frozen_dataclass_declared_on_the_class(name):
    cls = strategies.get(name)
    assert cls.Knobs is strategies.declaration(name).knobs
    assert issubclass(cls.Knobs, StrategyKnobs) and dataclasses.is_dataclass(cls.Knobs)
    # The nearest `knobs:` annotation names the declared class, so the type checker sees `self.knobs.alpha`.
    annotated = next(c.__annotations__["knobs"] for c in cls.__mro__
                     if "knobs" in c.__dict__.get("__annotations__", {}))
    assert annotated == cls.Knobs.__name__, f"{name}: annotate `knobs: {cls.Knobs.__name__}`"
    instance = strategies.build(name, 3)
    assert isinstance(instance.knobs, cls.Knobs)
    for key in cls.knob_specs():
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(instance.knobs, key, None)


@pytest.mark.parametrize("name,knob", KNOBS)
def test_declared_defaults_are_valid_and_of_the_declared_type(name, knob):
    spec = strategies.get(name).knob_specs()[knob]
    assert type(spec.default) is spec.kind
    assert spec.check(name, knob, spec.default) == spec.default
    assert getattr(strategies.build(name, 3).knobs, knob) == spec.default


@pytest.mark.parametrize("name,knob", KNOBS)
def test_a_value_reaches_self_knobs_and_a_bad_one_is_one_sentence_naming_the_key(name, knob):
    spec = strategies.get(name).knob_specs()[knob]
    if spec.kind is bool:
        good, bad = not spec.default, "yes"
    elif spec.choices:
        good, bad = next(c for c in spec.choices if c != spec.default), "no-such-choice"
    elif spec.kind is str:  # free text (Recon's base strategy): a value of another type
        good, bad = spec.default, 3
    elif spec.high is not None:
        good, bad = spec.kind(spec.high), spec.high + 1
    else:
        good, bad = spec.kind(spec.low), spec.low - 1
    assert getattr(strategies.build(name, 3, {knob: good}).knobs, knob) == good
    with pytest.raises(UserError) as err:
        strategies.build(name, 3, {knob: bad})
    assert f"'strategy_knobs.{name}.{knob}'" in str(err.value) and "\n" not in str(err.value)


def test_a_variant_that_fixes_a_knob_does_not_offer_it():
    assert "mode" in strategies.get("imtl").knob_specs()
    assert "mode" not in strategies.get("imtl-g").knob_specs()
    assert strategies.build("imtl-g", 3).knobs.mode == "gradient"
    assert strategies.build("imtl-l", 3).knobs.mode == "loss"
    with pytest.raises(UserError, match="'mode'"):
        strategies.build("imtl-g", 3, {"mode": "loss"})
