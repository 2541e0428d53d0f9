"""On-demand transformations are run from their source text; the pickled body is read as data.

Each case defines an on-demand view with Feast's own decorator in a module of its own (as
``feast apply`` imports a repo) and takes the proto Feast would store; some then alter it as
someone with write access to the registry could. The pickles built here are test inputs:
Skewless itself never unpickles one.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import types
from pathlib import Path

import dill
import pytest

from skewless.transformations import (
    Call,
    Global,
    TransformationError,
    TransformationSource,
    read_pickle,
)

MODULE = '''\
{future}
from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

request = RequestSource(name="request", schema=[Field(name="amount", dtype=Float64),
                                                Field(name="hour", dtype=Int64)])
OFFSET = 1.0


def helper(x):
    return x + OFFSET


@on_demand_feature_view(sources=[request], mode="python",
                        schema=[Field(name="out", dtype=Float64), Field(name="night", dtype=Int64)])
def ratios(inputs: dict[str, Any]{extra_args}) -> dict[str, Any]:
{body}
'''

GOOD_BODY = '''\
    import math

    def scaled(values: list, by: float = 2.0) -> list:
        return [None if v is None else math.log1p(v) * by for v in values]

    night = frozenset({0, 1, 2, 3, 4, 5})
    return {"out": scaled(inputs["amount"]),
            "night": [int(h in night) for h in inputs["hour"]]}
'''

INPUTS = {"amount": [1.0, None, 10.0], "hour": [3, 12, 23]}


def view_proto(tmp_path: Path, body: str = GOOD_BODY, future: str = "", extra_args: str = ""):
    """The on-demand view's proto as `feast apply` writes it, from a module of its own."""
    name = f"repo_{abs(hash((body, future, extra_args)))}"
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE.format(future=future, body=body, extra_args=extra_args))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name)
    return module.ratios.to_proto()


def source_of(proto) -> TransformationSource:
    return TransformationSource.from_proto(proto)


def with_udf(proto, **fields):
    altered = type(proto)()
    altered.CopyFrom(proto)
    udf = altered.spec.feature_transformation.user_defined_function
    for key, value in fields.items():
        setattr(udf, key, value)
    return altered


@pytest.mark.parametrize("future", ["", "from __future__ import annotations"],
                         ids=["annotations-evaluated", "annotations-postponed"])
def test_a_view_as_feast_applies_it_passes_and_runs_its_text(tmp_path, future):
    proto = view_proto(tmp_path, future=future)
    source = source_of(proto)
    assert source.function == "ratios" and "def ratios(" in source.text and source.body
    source.check()
    udf = source.load().udf
    assert udf.__code__.co_filename == "<feast registry>"  # compiled from the text, not the pickle
    out = udf(INPUTS)
    assert out["night"] == [1, 0, 0]
    assert out["out"][1] is None and out["out"][0] == pytest.approx(2 * 0.6931471805599453)
    # Feast's own loading of the same proto computes the same.
    from feast import OnDemandFeatureView

    assert OnDemandFeatureView.from_proto(proto).feature_transformation.udf(INPUTS) == out


def test_a_view_whose_module_imports_what_it_calls_at_the_top_passes(tmp_path):
    """CPython 3.11 compiles ``math.log1p(...)`` differently when the module imports ``math``
    at its top (even though the function imports it again), and the registry's text does not
    show the module's imports: the check must still see the pickle as the text compiled."""
    proto = view_proto(tmp_path, future="import math  # the module's own import")
    source = source_of(proto)
    source.check()
    assert source.load().udf(INPUTS)["night"] == [1, 0, 0]


def test_a_view_without_a_pickled_body_runs_its_text(tmp_path):
    source = source_of(with_udf(view_proto(tmp_path), body=b""))
    source.check()
    assert source.load().udf(INPUTS)["night"] == [1, 0, 0]


def another_function(inputs):
    return {"out": [999.0 for _ in inputs["amount"]], "night": [1 for _ in inputs["hour"]]}


class WritesAMarker:
    """Unpickling it writes a file: what a crafted body could do when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


def test_a_body_that_is_another_function_is_refused(tmp_path):
    another_function.__module__ = "__main__"  # as Feast's decorator does before pickling
    try:
        body = dill.dumps(another_function, recurse=True)
    finally:
        another_function.__module__ = __name__
    source = source_of(with_udf(view_proto(tmp_path), body=body, name="ratios"))
    with pytest.raises(TransformationError, match=r"on-demand view ratios: its pickled body is "
                       r"not its source text compiled \(it is a function named 'another"):
        source.check()
    # Even under the view's own name, its code is not the text's.
    renamed = dill.dumps(types.FunctionType(another_function.__code__.replace(
        co_name="ratios", co_qualname="ratios"), {}, "ratios"), recurse=True)
    with pytest.raises(TransformationError, match=r"\(ratios: its \w+ differs\)"):
        source_of(with_udf(view_proto(tmp_path), body=renamed)).check()


def test_a_body_that_runs_code_when_unpickled_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(WritesAMarker(marker))
    source = source_of(with_udf(view_proto(tmp_path), body=payload))
    with pytest.raises(TransformationError, match="it is not a pickled function"):
        source.check()
    assert not marker.exists()
    assert read_pickle(payload).func == Global("pathlib", "Path.write_text")
    pickle.loads(payload)  # the payload is live: loading it, as Feast could, writes the file
    assert marker.read_text() == "unpickled"


def test_the_same_code_with_a_global_swapped_is_refused(tmp_path):
    proto = view_proto(tmp_path)
    genuine = dill.loads(proto.spec.feature_transformation.user_defined_function.body)
    swapped = types.FunctionType(genuine.__code__, {**genuine.__globals__, "int": os.getpid},
                                 genuine.__name__)
    swapped.__module__ = "__main__"
    source = source_of(with_udf(proto, body=dill.dumps(swapped, recurse=True)))
    with pytest.raises(TransformationError, match="ratios uses int from its module"):
        source.check()


def test_a_function_that_needs_its_module_is_refused(tmp_path):
    body = '    return {"out": [helper(a) for a in inputs["amount"]], "night": inputs["hour"]}\n'
    with pytest.raises(TransformationError,
                       match="ratios uses OFFSET, helper from its module, which its source "
                       "text does not define"):
        source_of(view_proto(tmp_path, body=body)).check()


@pytest.mark.parametrize(("alter", "message"), [
    (lambda t: t + "\nprint('and then something else')\n", "is not the single function"),
    (lambda t: t.replace("def ratios", "def other"), "is not the single function 'ratios'"),
    (lambda t: "\n".join("    " + line for line in t.splitlines()), "does not compile on its own"),
    (lambda t: "", "holds no source text"),
], ids=["extra-statement", "another-name", "indented", "empty"])
def test_a_text_that_is_not_one_function_is_refused(tmp_path, alter, message):
    proto = view_proto(tmp_path)
    text = proto.spec.feature_transformation.user_defined_function.body_text
    with pytest.raises(TransformationError, match=message):
        source_of(with_udf(proto, body_text=alter(text))).check()


def test_a_default_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    proto = view_proto(tmp_path, extra_args=f", _marker=open({str(marker)!r}, 'w')")
    marker.unlink()  # importing the module (as `feast apply` does) ran it once
    with pytest.raises(TransformationError, match="a default of ratios is not a literal"):
        source_of(proto).check()
    assert not marker.exists()


def test_literal_defaults_must_match_the_pickled_ones(tmp_path):
    proto = view_proto(tmp_path, extra_args=", *, scale=2.0")
    source_of(proto).check()
    text = proto.spec.feature_transformation.user_defined_function.body_text
    with pytest.raises(TransformationError, match="keyword defaults differ"):
        source_of(with_udf(proto, body_text=text.replace("scale=2.0", "scale=3.0"))).check()


def test_an_unreadable_body_is_refused(tmp_path):
    with pytest.raises(TransformationError, match="unreadable"):
        source_of(with_udf(view_proto(tmp_path), body=b"\x80\x04not a pickle")).check()


def test_reading_a_pickle_imports_and_calls_nothing():
    def text(value: str) -> bytes:  # SHORT_BINUNICODE
        return b"\x8c" + bytes([len(value)]) + value.encode()

    # skewless_never_imported.run("now"), as a pickle would call it
    payload = (b"\x80\x04" + text("skewless_never_imported") + text("run") + b"\x93"
               + text("now") + b"\x85R.")
    before = set(sys.modules)
    value = read_pickle(payload)
    assert isinstance(value, Call) and value.func == Global("skewless_never_imported", "run")
    assert value.args == ("now",)
    assert set(sys.modules) == before


def test_any_corrupted_body_is_refused_or_harmless_never_a_crash(tmp_path):
    """Single-byte corruptions of a real body: each is refused with the view named, or (a byte
    of line numbers, say) checked and passed; none escapes as another exception."""
    import random

    proto = view_proto(tmp_path)
    body = proto.spec.feature_transformation.user_defined_function.body
    rng = random.Random(7)
    refused = 0
    for _ in range(400):
        corrupted = bytearray(body)
        corrupted[rng.randrange(len(body))] = rng.randrange(256)
        try:
            source_of(with_udf(proto, body=bytes(corrupted))).check()
        except TransformationError as exc:
            assert str(exc).startswith("on-demand view ratios: ")
            refused += 1
    assert refused > 200
