"""On-demand transformations: the registry's source text is the code that runs.

``feast apply`` stores each on-demand view's function twice: as source text (``body_text``,
which the contract's fingerprint hashes) and as a dill pickle (``body``). Feast 0.67 runs the
text when it compiles on its own and unpickles the body when it does not; the pickle is no
identity either way (it embeds the checkout's absolute path, and two applies of the same code
pickle its globals in different orders). So Skewless runs the text only, in training and in
serving alike, compiled as Feast compiles it (decorators dropped, annotations not evaluated,
Feast's namespace), and never unpickles the body: it reads it as data, opcode by opcode, and
refuses a registry whose body is not the compiled form of its text (altered outside ``feast
apply``), since Feast's own tools could run that body instead.

The text must be what ``feast apply`` writes: one top-level function, its decorators, and
literal defaults, if any. Compiling it defines that function and runs nothing else (the
decorators are dropped, as Feast drops them).
"""

from __future__ import annotations
import __future__ as future_features

import ast
import builtins
import math
import pickletools
from dataclasses import dataclass, field
from types import CodeType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from skewless.errors import SkewlessError

if TYPE_CHECKING:
    from feast.on_demand_feature_view import OnDemandFeatureView
    from feast.protos.feast.core.OnDemandFeatureView_pb2 import (
        OnDemandFeatureView as OnDemandFeatureViewProto,
    )
    from feast.transformation.base import Transformation

# Annotations are never evaluated when Feast rehydrates a function from its text (its module
# compiles under this future); the function in the repo may have been compiled either way.
ANNOTATIONS = future_features.annotations.compiler_flag
REGISTRY_FILENAME = "<feast registry>"


class TransformationError(SkewlessError):
    """An on-demand view's code in the registry cannot be trusted or run; nothing loads it."""


_ARROW_TYPES = {"Int32": pa.int32(), "Int64": pa.int64(), "Float32": pa.float32(),
                "Float64": pa.float64(), "Bool": pa.bool_(), "String": pa.string()}


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type a Feast scalar type is stored as in training sets."""
    return _ARROW_TYPES[dtype]


def transform_table(odfv: OnDemandFeatureView, table: pa.Table,
                    names: list[str]) -> dict[str, pa.ChunkedArray]:
    """Run an on-demand view over a table of its inputs (``<view>__<feature>`` columns and
    request fields), each output in ``names`` cast to its declared type.

    The one way an on-demand view runs column-wise over a table: training runs every view
    this way, the predictor its pandas-mode views, so both see the same values, cast alike.
    """
    outputs = odfv.transform_arrow(table, full_feature_names=True)
    declared = {f.name: str(f.dtype) for f in odfv.features}
    prefix = odfv.projection.name_to_use()
    return {name: outputs.column(f"{prefix}__{name}").cast(arrow_type(declared[name]))
            for name in names}


# Reading a pickle as data --------------------------------------------------------------------

class UnreadablePickle(ValueError):
    """The pickle holds something this reader does not interpret (so it is not compared)."""


@dataclass(frozen=True)
class Global:
    """A ``module.name`` the pickle would import (never imported here)."""

    module: str
    name: str


@dataclass(eq=False)
class Call:
    """A call the pickle would make (``REDUCE``/``NEWOBJ``), with the state ``BUILD`` gives it."""

    func: Any
    args: tuple[Any, ...]
    state: list[Any] = field(default_factory=list)


_MARK = object()
_LITERALS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_VALUE_OPCODES = {
    "INT", "LONG", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "SHORT_BINBYTES", "BINBYTES",
    "BINBYTES8",
}


def read_pickle(data: bytes) -> Any:
    """The object graph a pickle describes, as plain values, :class:`Global` and :class:`Call`.

    Walks the opcodes (``pickletools.genops``): nothing is imported, called or constructed
    beyond tuples, lists, dicts, sets, strings, bytes and numbers.
    """
    stack: list[Any] = []
    marks: list[list[Any]] = []
    items: Any
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        # Call it before naming ``stack`` in the same expression: it rebinds ``stack``.
        nonlocal stack
        items = stack
        if not marks:
            raise UnreadablePickle("unbalanced MARK")
        stack = marks.pop()
        return items

    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                break
            if name in _LITERALS:
                stack.append(_LITERALS[name])
            elif name in _VALUE_OPCODES:
                stack.append(arg)
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg or b""))
            elif name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise UnreadablePickle(f"{name} on a short stack")
                items, stack[-n:] = tuple(stack[-n:]), []
                stack.append(items)
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(tuple(items))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                items = pop_mark()
                stack.append(items)
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = pop_mark()
                stack[-1].extend(items)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif name == "SETITEMS":
                items = pop_mark()
                stack[-1].update(zip(items[::2], items[1::2], strict=True))
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name == "ADDITEMS":
                items = pop_mark()
                stack[-1].update(items)
            elif name == "FROZENSET":
                items = pop_mark()
                stack.append(frozenset(items))
            elif name == "GLOBAL":
                module, _, attribute = str(arg).partition(" ")
                stack.append(Global(module, attribute))
            elif name == "STACK_GLOBAL":
                attribute, module = stack.pop(), stack.pop()
                if not isinstance(module, str) or not isinstance(attribute, str):
                    raise UnreadablePickle("STACK_GLOBAL of a non-string")
                stack.append(Global(module, attribute))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                if not isinstance(args, tuple):
                    raise UnreadablePickle("REDUCE with arguments that are not a tuple")
                stack.append(Call(func, args))
            elif name == "NEWOBJ":
                args, cls = stack.pop(), stack.pop()
                stack.append(Call(Global("copyreg", "__newobj__"), (cls, *args)))
            elif name == "NEWOBJ_EX":
                kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
                stack.append(Call(Global("copyreg", "__newobj_ex__"), (cls, args, kwargs)))
            elif name == "BUILD":
                state = stack.pop()
                if not isinstance(stack[-1], Call):
                    raise UnreadablePickle("BUILD on something that is not an object")
                stack[-1].state.append(state)
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(arg or 0)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg or 0)])
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            else:  # persistent ids, extensions, out-of-band buffers, protocol 0-1 objects
                raise UnreadablePickle(f"opcode {name}")
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnreadablePickle):
            raise
        raise UnreadablePickle(f"malformed pickle ({exc})") from exc
    if len(stack) != 1 or marks:
        raise UnreadablePickle("the pickle does not describe one object")
    return stack[0]


# Comparing a pickled function with the source text ---------------------------------------------

_CREATE_FUNCTION = Global("dill._dill", "_create_function")
_CREATE_CODE = Global("dill._dill", "_create_code")
_LOAD_TYPE = Global("dill._dill", "_load_type")
_IMPORT_MODULE = Global("dill._dill", "_import_module")
# dill's arguments for a code object (Python 3.11+, ``dill._dill.save_code``): co_lnotab
# first, then CodeType's own. Where and on which lines the code was compiled is no part of
# what it does.
_DILL_CODE_FIELDS = (
    "lnotab", "argcount", "posonlyargcount", "kwonlyargcount", "nlocals", "stacksize",
    "flags", "code", "consts", "names", "varnames", "filename", "name", "qualname",
    "firstlineno", "linetable", "exceptiontable", "freevars", "cellvars",
)
_LOCATION_FIELDS = {"lnotab", "filename", "firstlineno", "linetable"}


def _same_constant(pickled: Any, const: Any) -> bool:
    try:
        return _equal_constant(pickled, const)
    except (TypeError, ValueError):  # a pickled value no constant could be
        return False


def _equal_constant(pickled: Any, const: Any) -> bool:
    if isinstance(const, CodeType):
        return _code_difference(pickled, const) is None
    if isinstance(const, tuple):
        return (isinstance(pickled, tuple) and len(pickled) == len(const)
                and all(_same_constant(p, c) for p, c in zip(pickled, const, strict=True)))
    if isinstance(const, frozenset):
        return isinstance(pickled, frozenset | set) and pickled == const
    if const is Ellipsis:
        return pickled == Global("builtins", "Ellipsis")
    if isinstance(const, complex):
        return (isinstance(pickled, Call) and pickled.func == Global("builtins", "complex")
                and complex(*pickled.args) == const)
    if isinstance(const, float):
        return isinstance(pickled, float) and (
            pickled == const and math.copysign(1, pickled) == math.copysign(1, const)
            or math.isnan(pickled) and math.isnan(const))
    return type(pickled) is type(const) and bool(pickled == const)


def _code_difference(pickled: Any, code: CodeType) -> str | None:
    """None when ``pickled`` (dill's form of a code object) is ``code`` compiled elsewhere;
    else the first field that differs."""
    if not (isinstance(pickled, Call) and pickled.func == _CREATE_CODE):
        return f"{code.co_qualname}: not a code object"
    if len(pickled.args) != len(_DILL_CODE_FIELDS):
        return (f"{code.co_qualname}: a code object of another Python or dill version "
                f"({len(pickled.args)} fields)")
    for name, value in zip(_DILL_CODE_FIELDS, pickled.args, strict=True):
        if name in _LOCATION_FIELDS:
            continue
        expected = getattr(code, f"co_{name}")
        if name == "flags":
            same = isinstance(value, int) and (value | ANNOTATIONS) == (expected | ANNOTATIONS)
        elif name == "consts":
            same = (isinstance(value, tuple) and len(value) == len(expected)
                    and all(_same_constant(p, c) for p, c in zip(value, expected, strict=True)))
        elif isinstance(expected, bytes):
            same = (value.encode() if isinstance(value, str) else value) == expected
        else:
            same = value == expected
        if not same:
            return f"{code.co_qualname}: its {name} differs"
    return None


def _global_difference(name: str, value: Any, namespace: dict[str, Any]) -> bool:
    """Whether a global the pickled function carries is something other than what the name
    means when the text is compiled (a builtin, or a module Feast's namespace provides)."""
    if value == Global("builtins", name) or (
            isinstance(value, Call) and value.func == _LOAD_TYPE and value.args == (name,)
            and isinstance(getattr(builtins, name, None), type)):
        return False
    module = namespace.get(name)
    return not (module is not None and isinstance(value, Call) and value.func == _IMPORT_MODULE
                and value.args[:1] == (getattr(module, "__name__", None),))


# The source text ------------------------------------------------------------------------------

def _function_node(text: str, name: str, view: str) -> ast.FunctionDef:
    """The text's one top-level function, its decorators dropped; refused if the text holds
    anything else or a default that is not a literal."""
    try:
        tree = ast.parse(text, REGISTRY_FILENAME)
    except SyntaxError as exc:
        raise TransformationError(
            f"on-demand view {view}: its source text does not compile on its own ({exc.msg}, "
            f"line {exc.lineno}); Feast would run the pickled body instead. Define the "
            "function at the top level of its module and re-run `feast apply`") from exc
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or (
            tree.body[0].name != name):
        raise TransformationError(
            f"on-demand view {view}: its source text is not the single function {name!r} "
            "`feast apply` writes; refusing to run it")
    node = tree.body[0]
    for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
        try:
            ast.literal_eval(default)
        except ValueError as exc:
            raise TransformationError(
                f"on-demand view {view}: a default of {name} is not a literal "
                f"({ast.unparse(default)}); compiling it would run code") from exc
    node.decorator_list = []
    return node


def _compile_function(node: ast.FunctionDef, flags: int,
                      imported: tuple[str, ...] = ()) -> tuple[CodeType, CodeType]:
    """The module code defining the function alone, and the function's own code object.

    ``imported``: names the function's module imports at its top level (compiled, never
    run, only to give the function the bytecode it gets in such a module).
    """
    imports: list[ast.stmt] = [ast.Import(names=[ast.alias(name=n)]) for n in imported]
    tree = ast.fix_missing_locations(ast.Module(body=[*imports, node], type_ignores=[]))
    module = compile(tree, REGISTRY_FILENAME, "exec", flags=flags, dont_inherit=True)
    code = next(c for c in module.co_consts
                if isinstance(c, CodeType) and c.co_name == node.name)
    return module, code


def _exec_namespace() -> dict[str, Any]:
    """The globals Feast gives a function it rehydrates from source (pandas and numpy)."""
    from feast.transformation.udf_rehydrate import _exec_namespace

    return _exec_namespace()


_MAX_METHOD_BASES = 6


def _module_imports(node: ast.FunctionDef) -> list[tuple[str, ...]]:
    """Which of the names the function calls methods on its module may import at the top.

    CPython 3.11 compiles ``name.method(...)`` differently when the module imports ``name``
    at its top level (even when the function imports it again inside, as a pandas-mode view
    does with ``pd``), and the registry's text no longer shows the module's imports: each
    combination is a form the pickled body may rightly have.
    """
    bases = sorted({call.func.value.id for call in ast.walk(node)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and isinstance(call.func.value, ast.Name)}
                   - {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                      and isinstance(n.ctx, ast.Store)}
                   - {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)})
    if len(bases) > _MAX_METHOD_BASES:
        return [(), tuple(bases)]
    return [tuple(b for i, b in enumerate(bases) if mask >> i & 1)
            for mask in range(1 << len(bases))]


@dataclass(frozen=True)
class TransformationSource:
    """An on-demand view's transformation as the registry stores it, read without running it."""

    view: str
    mode: str  # the view's mode: python or pandas
    kind: str | None  # user_defined_function, substrait_transformation or None
    function: str  # the function's name
    text: str  # the source text: what the fingerprint covers and what runs
    body: bytes = field(repr=False)  # the dill pickle: checked, never unpickled

    @classmethod
    def from_proto(cls, proto: OnDemandFeatureViewProto) -> TransformationSource:
        spec = proto.spec
        kind = spec.feature_transformation.WhichOneof("transformation")
        if kind == "user_defined_function":
            udf = spec.feature_transformation.user_defined_function
        elif kind is None and spec.HasField("user_defined_function"):  # before Feast 0.40
            kind, udf = "user_defined_function", spec.user_defined_function
        else:
            return cls(spec.name, spec.mode or "pandas", kind, "", "", b"")
        return cls(spec.name, spec.mode or "pandas", kind, udf.name, udf.body_text, udf.body)

    def check(self) -> None:
        """Refuse (:class:`TransformationError`) unless the text alone is the code: a function
        that compiles on its own, and a pickled body that is that function compiled, if any.

        Nothing is executed: the text is parsed and compiled, the body read as data.
        """
        if self.kind != "user_defined_function":
            raise TransformationError(
                f"on-demand view {self.view}: its transformation is a {self.kind or 'nothing'}, "
                "stored only as a pickle; Skewless runs on-demand views written as Python "
                "functions")
        if self.mode not in ("python", "pandas"):
            raise TransformationError(
                f"on-demand view {self.view}: mode {self.mode!r} has no source-text form")
        if not self.text.strip():
            raise TransformationError(
                f"on-demand view {self.view}: the registry holds no source text for it (an "
                "older Feast wrote it), only a pickle; re-run `feast apply`")
        node = _function_node(self.text, self.function, self.view)
        if not self.body:
            return  # no pickle: the text is the only code there is
        references = [_compile_function(node, flags, imported)[1]
                      for flags in (0, ANNOTATIONS) for imported in _module_imports(node)]
        problem = self._body_difference(node, references)
        if problem:
            raise TransformationError(
                f"on-demand view {self.view}: its pickled body is not its source text compiled "
                f"({problem}). The registry was altered outside `feast apply`, or applied with "
                "another Python or dill than this environment's; Feast's own tools could run "
                "that body, so nothing is loaded from this registry. Re-run `feast apply` here")

    def _body_difference(self, node: ast.FunctionDef, references: list[CodeType]) -> str | None:
        try:
            root = read_pickle(self.body)
        except UnreadablePickle as exc:
            return f"unreadable: {exc}"
        if not (isinstance(root, Call) and root.func == _CREATE_FUNCTION
                and len(root.args) >= 5):
            return "it is not a pickled function"
        code, globals_, name, defaults, closure = root.args[:5]
        if name != self.function:
            return f"it is a function named {name!r}"
        differences = [_code_difference(code, reference) for reference in references]
        if all(differences):
            return differences[0]
        if closure is not None:
            return "it closes over variables"
        literal = [ast.literal_eval(d) for d in node.args.defaults]
        if (defaults or None) != (tuple(literal) or None):
            return "its default arguments differ"
        kwdefaults = {a.arg: ast.literal_eval(d) for a, d in
                      zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
                      if d is not None}
        states = [s[1] for s in root.state if isinstance(s, tuple) and len(s) == 2
                  and isinstance(s[1], dict)]
        if (next((s.get("__kwdefaults__") for s in states), None) or {}) != kwdefaults:
            return "its keyword defaults differ"
        if not isinstance(globals_, dict) or not all(isinstance(k, str) for k in globals_):
            return "its globals are not a dictionary of names"
        namespace = _exec_namespace()
        foreign = sorted(k for k, v in globals_.items() if k not in ("__name__", "__builtins__")
                         and _global_difference(k, v, namespace))
        if foreign:  # feast apply wrote it, but the text alone is not the whole function
            raise TransformationError(
                f"on-demand view {self.view}: {self.function} uses "
                f"{', '.join(foreign)} from its module, which its source text does "
                "not define (the text is what runs, in training and serving); import or define "
                "them inside the function and re-run `feast apply`")
        return None

    def load(self) -> Transformation:
        """Feast's transformation object around the function compiled from the text.

        Call :meth:`check` first. Compiling runs the definition only (literal defaults,
        annotations left unevaluated), in the namespace Feast rehydrates functions in.
        """
        from feast.transformation.pandas_transformation import PandasTransformation
        from feast.transformation.python_transformation import PythonTransformation

        node = _function_node(self.text, self.function, self.view)
        module, _ = _compile_function(node, ANNOTATIONS)
        namespace = _exec_namespace()
        exec(module, namespace)  # noqa: S102 - the checked text: one def, literal defaults
        udf = namespace[self.function]
        if self.mode == "python":
            return PythonTransformation(udf=udf, udf_string=self.text)
        return PandasTransformation(udf=udf, udf_string=self.text)
