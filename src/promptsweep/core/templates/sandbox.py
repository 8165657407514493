"""A Jinja2 sandbox with resource limits, for prompt templates from pull requests.

Jinja's ``ImmutableSandboxedEnvironment`` stops templates reaching Python internals, but
not from asking for work: ``{{ 'a' * 10**9 }}``, ``{{ 3 ** 10**8 }}``, ``'a'|center(10**9)``
or two nested ``range(99999)`` loops run in C or for minutes, hold the GIL (so Ctrl-C waits)
and can take the machine's memory. Jinja documents ``intercepted_binops`` for exactly this;
this module adds the rest:

* every operator, call and filter that can grow a value checks the size it *would* produce
  before producing it (``RenderLimits.max_prompt_chars`` characters, ``max_int_bits`` bits);
* loops, calls, filters and output count steps against ``max_steps`` and a time limit, checked
  as the template runs (``{% for %}`` iterables are wrapped, ``~`` and output are metered);
* everything a render allocates is summed against ``max_alloc_chars``;
* containers are measured deep (:func:`_deep_size`): every string's characters and every other
  value inside them, nested lists counted once per reference. ``[x] * 10`` holds one list ten
  times: cheap in memory, but ten copies of ``x`` once printed, joined or dumped, so a nested
  list built by ``*``, ``+`` or a literal cannot grow past the limits between two checks.

The limits bound work done by template code itself. One call can still run long inside
Python code the meters cannot see (``wordwrap(1)`` on a 450 000-character string runs
``textwrap`` for seconds per call), so a filter call runs under a trace function that checks
the deadline at each line of Jinja's, MarkupSafe's, ``textwrap``'s and ``pprint``'s code and raises
``RenderTimeout`` there. A render therefore ends within the time limit (plus at most one C
call, whose size the checks above bound) or with a ``TemplateLimitError`` naming the limit;
``KeyboardInterrupt`` is never caught.

Why not a watchdog thread raising in the rendering thread (``PyThreadState_SetAsyncExc``)?
We had one: an asynchronous exception lands at whatever bytecode runs next, and under threads
that was inside importlib's module lock, which it left held, so every later render hung (a CI
run timed out at 900 s). The
trace function raises only in the thread that renders, only at a line of code on the list
above (none of it takes a lock outside a ``with``). Chose a bounded environment over a
subprocess with a CPU/memory rlimit: prompts render hundreds of times per run, and a process
per render would cost more than the evals.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

__all__ = [
    "DEFAULT_LIMITS",
    "BoundedSandbox",
    "RenderLimits",
    "RenderTimeout",
    "TemplateLimitError",
    "active_budget",
]


@dataclass(frozen=True)
class RenderLimits:
    """How much work one prompt render may do."""

    max_prompt_chars: int = 1_000_000
    """Largest rendered prompt (all messages) and largest single value, in characters."""
    timeout_s: float = 10.0
    """Wall-clock limit for rendering one prompt."""
    max_steps: int = 1_000_000
    """Loop iterations, calls, filters and outputs one render may run."""
    max_int_bits: int = 4096
    """Largest integer a template may compute (4096 bits is a 1233-digit number)."""

    @property
    def max_alloc_chars(self) -> int:
        """Everything one render may allocate, summed (values, concatenations, output)."""
        return 10 * self.max_prompt_chars


DEFAULT_LIMITS = RenderLimits()


class TemplateLimitError(Exception):
    """A template asked for more than ``RenderLimits`` allow; the message names the limit."""


def _timeout_message(seconds: float) -> str:
    return f"rendering took longer than the {seconds:g}s limit (--template-timeout)"


class RenderTimeout(TemplateLimitError):
    """A render passed its time limit (``RenderLimits.timeout_s``)."""


class _Budget:
    """What one render has used so far."""

    __slots__ = ("chars", "deadline", "limits", "steps")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.steps = 0
        self.chars = 0
        self.deadline = time.monotonic() + limits.timeout_s

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise TemplateLimitError(
                f"the template ran more than {self.limits.max_steps} steps (loop iterations, calls, "
                "filters); simplify its loops"
            )
        if self.steps % 32 == 0 and time.monotonic() > self.deadline:
            raise RenderTimeout(_timeout_message(self.limits.timeout_s))

    def check_time(self) -> None:
        """The deadline, checked now (before and after each filter call)."""
        if time.monotonic() > self.deadline:
            raise RenderTimeout(_timeout_message(self.limits.timeout_s))

    def check_size(self, size: int, what: str) -> None:
        if size > self.limits.max_prompt_chars:
            raise TemplateLimitError(
                f"{what} would make {size} characters, over the limit of {self.limits.max_prompt_chars} "
                "(--max-prompt-chars; values inside lists and dicts count, once per reference)"
            )

    def check_bits(self, bits: int, what: str) -> None:
        if bits > self.limits.max_int_bits:
            raise TemplateLimitError(
                f"{what} would have about {bits} bits, over the limit of {self.limits.max_int_bits} bits"
            )

    def check_nested(self, value: Any, what: str) -> None:
        """Before a container is printed, copied or joined: its deep size (:func:`_deep_size`)
        within the size limit, so the work that follows is bounded by it."""
        if isinstance(value, _CONTAINERS):
            self.check_size(_deep_size(value, self.limits.max_prompt_chars), what)

    def account(self, value: Any) -> None:
        """Count a value a template produced against the size and allocation limits (a
        container by its deep size: what it holds, shared parts once per reference)."""
        size = _size(value, self.limits.max_prompt_chars)
        if size is None:
            return
        self.check_size(size, "a value")
        self.chars += size
        if self.chars > self.limits.max_alloc_chars:
            raise TemplateLimitError(
                f"the template produced more than {self.limits.max_alloc_chars} characters in all "
                f"(10 x --max-prompt-chars {self.limits.max_prompt_chars})"
            )


_local = threading.local()


def active_budget() -> _Budget:
    """The budget of the render running in this thread; outside a render (constant folding
    while compiling), a fresh one, so the per-value limits still hold."""
    budget: _Budget | None = getattr(_local, "budget", None)
    return budget if budget is not None else _Budget(DEFAULT_LIMITS)


#: Modules whose code a filter call may be stopped in, at the start of a line: they hold no
#: lock across lines outside a ``with``. Code elsewhere (importlib, threading, logging, weakref
#: callbacks run by the garbage collector) is never interrupted; the deadline is checked again
#: when it returns into code on this list, and after the filter returns.
_INTERRUPTIBLE_MODULES = frozenset({"jinja2", "markupsafe", "textwrap", "pprint"})


def _interruptible(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__")
    if module is None:  # a compiled template's code runs in a namespace without __name__
        return "environment" in frame.f_globals
    return str(module).partition(".")[0] in _INTERRUPTIBLE_MODULES


def _call_before_deadline(budget: _Budget, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, stopped with ``RenderTimeout`` at the first line of
    interruptible code it runs after ``budget``'s deadline.

    ``sys.settrace`` for this thread and this call only (the previous trace function, a
    coverage tool's say, is put back after); tracing costs only while a filter runs."""

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            budget.check_time()
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if not _interruptible(frame):
            return None  # no line events here, and nothing raised
        budget.check_time()
        return on_line

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        return func(*args, **kwargs)
    finally:
        sys.settrace(previous)


@contextmanager
def rendering(limits: RenderLimits, *, reuse: bool = False) -> Iterator[_Budget]:
    """Make a fresh budget active for one render in this thread (``reuse``: keep the one
    already active, so the parts of one prompt share it)."""
    previous = getattr(_local, "budget", None)
    if reuse and previous is not None:
        yield previous
        return
    _local.budget = budget = _Budget(limits)
    try:
        yield budget
    finally:
        _local.budget = previous


_CONTAINERS = (list, tuple, dict, set, frozenset, KeysView, ValuesView, ItemsView, Namespace)


def _scalar_size(value: Any) -> int | None:
    """Characters a non-container takes when printed (a lower bound), or None for a container."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, _CONTAINERS):
        return None
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return max(1, value.bit_length() * 3 // 10)  # decimal digits, from below
    if isinstance(value, float):
        return len(repr(value))
    return 1


def _children(value: Any) -> list[Any]:
    """What a container holds, without making new containers (their ids must stay unique
    while :func:`_deep_size` runs)."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, ItemsView):
        return [part for pair in value for part in pair]
    if isinstance(value, Namespace):
        return [value._Namespace__attrs]  # what its repr prints
    return list(value)


def _deep_size(value: Any, cap: int) -> int:
    """The characters and values ``value`` holds, nested containers included, each shared
    container counted once per reference (``[x] * 10`` is ten ``x``): a lower bound on what
    printing, joining or dumping it makes. Strings count their length, other values their
    printed width, an empty container 1. Stops once past ``cap`` (returns a number over it).

    Iterative and memoised by identity, so it costs one visit per distinct container however
    often each is shared, and deep nesting cannot reach the recursion limit."""
    size = _scalar_size(value)
    if size is not None:
        return size
    sizes: dict[int, int] = {}
    on_path = {id(value)}
    frames: list[list[Any]] = [[value, _children(value), 0, 0]]  # container, children, next, total
    while frames:
        frame = frames[-1]
        container, children, index, total = frame
        if index < len(children):
            frame[2] = index + 1
            child = children[index]
            child_size = _scalar_size(child)
            if child_size is None:
                child_size = sizes.get(id(child))
            if child_size is None:
                if id(child) in on_path:  # a cycle: printed as [...]
                    child_size = 1
                else:
                    on_path.add(id(child))
                    frames.append([child, _children(child), 0, 0])
                    continue
            frame[3] = total = total + child_size
            if total > cap:
                return int(total)  # every container on the path holds at least this much
            continue
        frames.pop()
        on_path.discard(id(container))
        held = int(max(total, 1))
        sizes[id(container)] = held
        if not frames:
            return held
        frames[-1][3] += held
        if frames[-1][3] > cap:
            return int(frames[-1][3])
    return 1  # not reached


def _size(value: Any, cap: int) -> int | None:
    """A value's size for the limits: characters of a string, the deep size of a container."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, _CONTAINERS):
        return _deep_size(value, cap)
    return None


def _is_seq(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


# ----------------------------------------------------------------------------- growth checks


def _seq_size(budget: _Budget, seq: Any) -> int:
    """A string's length, a list's or tuple's deep size (0 when empty: repeating it makes nothing)."""
    if isinstance(seq, (str, bytes)) or not seq:
        return len(seq)
    return _deep_size(seq, budget.limits.max_prompt_chars)


def _check_mul(budget: _Budget, left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if _is_seq(seq) and isinstance(times, int) and not isinstance(times, bool):
            if times > 0:
                budget.check_size(_seq_size(budget, seq) * times, "a repeated value (*)")
            return
    if isinstance(left, int) and isinstance(right, int):
        budget.check_bits(abs(left).bit_length() + abs(right).bit_length(), "a product (*)")


def _check_pow(budget: _Budget, base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent > budget.limits.max_int_bits:
            budget.check_bits(exponent, "a power (**)")
        budget.check_bits(abs(base).bit_length() * exponent, "a power (**)")


def _check_add(budget: _Budget, left: Any, right: Any) -> None:
    if _is_seq(left) and _is_seq(right):
        budget.check_size(_seq_size(budget, left) + _seq_size(budget, right), "a concatenation (+)")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_percent(budget: _Budget, fmt: Any, args: Any) -> None:
    if not isinstance(fmt, str):
        return
    for value in args if isinstance(args, tuple) else (args,):
        budget.check_nested(value, "a %-formatted value")
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part and part != "*":
                budget.check_size(int(part), "a %-format width")
    values = args if isinstance(args, tuple) else (args,)
    if "*" in fmt:
        for value in values:
            if isinstance(value, int):
                budget.check_size(abs(value), "a %-format width")


def _check_format_spec(budget: _Budget, fmt: str, args: Iterable[Any]) -> None:
    """``str.format`` widths: ``{:>999999999}`` or ``{:{w}}`` with a large ``w``."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call raises the format error
    for _literal, _field, spec, _conversion in parsed:
        if not spec:
            continue
        for number in _NUMBER.findall(spec):
            budget.check_size(int(number), "a format width")
        if "{" in spec:
            for value in args:
                if isinstance(value, int):
                    budget.check_size(abs(value), "a format width")


def _materialize(budget: _Budget, items: Any, what: str) -> list[Any]:
    """An iterable as a list, counted and measured as it is read."""
    out: list[Any] = []
    total = 0
    for item in items:
        budget.step()
        out.append(item)
        # A container's deep size, not str(item): printing a nested list is the work to bound.
        size = _size(item, budget.limits.max_prompt_chars)
        total += size if size is not None else len(str(item))
        budget.check_size(total, what)
    return out


def _check_replace(budget: _Budget, text: Any, old: Any, new: Any, count: Any = None) -> None:
    if not (isinstance(text, (str, bytes)) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return
    growth = len(new) - len(old)
    if growth <= 0:
        return
    hits = (len(text) + 1) if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.check_size(len(text) + hits * growth, "a replace() result")


_STR_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_DENIED_STR_METHODS = frozenset({"translate", "maketrans"})


def _check_str_method(
    budget: _Budget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Pre-checks for ``str``/``bytes`` methods that can grow their result; returns the args
    (``join`` gets its iterable read into a measured list)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, (str, bytes)):
        return args
    if name in _DENIED_STR_METHODS:
        raise TemplateLimitError(f"str.{name}() is not available in prompt templates")
    if name in _STR_WIDTH_METHODS:
        width = _int(args[0]) if args else _int(kwargs.get("width"))
        if width is not None:
            budget.check_size(width, f"str.{name}() width")
    elif name == "expandtabs":
        tabsize = _int(args[0]) if args else _int(kwargs.get("tabsize", 8))
        if tabsize is not None:
            budget.check_size(
                len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * tabsize,  # type: ignore[arg-type]
                "str.expandtabs() result",
            )
    elif name == "replace" and len(args) >= 2:
        _check_replace(budget, owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    elif name == "join" and args:
        items = _materialize(budget, args[0], "a join() result")
        total = sum(len(x) for x in items if isinstance(x, (str, bytes))) + len(owner) * max(
            len(items) - 1, 0
        )
        budget.check_size(total, "a join() result")
        return (items, *args[1:])
    return args


# ----------------------------------------------------------------------------- filters

_Filter = Callable[..., Any]

#: Filters that look at a container without printing or copying all of it; every other filter
#: gets a container only within the size limit (``z|pprint``, ``z|tojson``, ``z|join``, ``z|list``).
_MEASURING_FILTERS = frozenset(
    {
        "length",
        "count",
        "first",
        "last",
        "random",
        "default",
        "d",
        "attr",
        "abs",
        "int",
        "float",
        "round",
        "min",
        "max",
    }
)


def _filter_checks(
    budget: _Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Pre-checks for the built-in filters whose result can outgrow their input."""

    def arg(index: int, key: str, default: Any = None) -> Any:
        return args[index] if len(args) > index else kwargs.get(key, default)

    value = args[0] if args else None
    if name not in _MEASURING_FILTERS:
        budget.check_nested(value, f"the value {name}() reads")
    if name == "center":
        width = _int(arg(1, "width", 80))
        if width is not None:
            budget.check_size(width, "center() width")
    elif name == "indent":
        width = arg(1, "width", 4)
        per_line = width if isinstance(width, int) else len(str(width))
        lines = str(value).count("\n") + 1
        budget.check_size(len(str(value)) + lines * max(per_line, 0), "an indent() result")
    elif name == "wordwrap":
        text = str(value)
        width = _int(arg(1, "width", 79)) or 1
        wrap = arg(3, "wrapstring", None)  # (s, width, break_long_words, wrapstring)
        wrap_len = len(wrap) if isinstance(wrap, str) else 1
        budget.check_size(len(text) + (len(text) // max(width, 1) + 1) * wrap_len, "a wordwrap() result")
    elif name in ("truncate", "batch", "slice"):
        count = _int(arg(1, {"truncate": "length", "batch": "linecount", "slice": "slices"}[name]))
        if count is not None:
            budget.check_size(abs(count), f"{name}() size")
    elif name == "replace":
        _check_replace(budget, value, arg(1, "old"), arg(2, "new"), arg(3, "count"))
    elif name == "join":
        items = _materialize(budget, value, "a join() result")
        sep = arg(1, "d", "")
        total = sum(len(str(x)) for x in items) + len(str(sep)) * max(len(items) - 1, 0)
        budget.check_size(total, "a join() result")
        return (items, *args[1:])
    elif name == "format":
        _check_percent(budget, value, tuple(args[1:]) or tuple(kwargs.values()))
    elif name == "sum":
        start = arg(2, "start", 0)
        if not isinstance(start, (int, float)):
            raise TemplateLimitError("sum() only adds numbers in prompt templates (start must be a number)")
    return args


def _bounded_filter(name: str, func: _Filter) -> _Filter:
    injects = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja still passes env/context first
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = active_budget()
        budget.step()
        budget.check_time()
        head, rest = (args[:1], args[1:]) if injects else ((), args)
        rest = _filter_checks(budget, name, rest, kwargs)
        result = _call_before_deadline(budget, func, *head, *rest, **kwargs)
        budget.check_time()
        budget.account(result)
        return result

    return bounded


def _bounded_range(*args: int) -> range:
    """Jinja's ``safe_range`` (at most 100 000 items); the loop wrapper counts iterations."""
    budget = active_budget()
    budget.step()
    return safe_range(*args)


# ----------------------------------------------------------------------------- the environment


@pass_context
def _meter_iter(context: Any, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = active_budget()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _meter_concat(context: Any, *parts: Any) -> str:
    budget = active_budget()
    for part in parts:
        budget.check_nested(part, "a concatenation (~)")
    texts = [str(part) for part in parts]
    budget.check_size(sum(len(t) for t in texts), "a concatenation (~)")
    result = "".join(texts)
    budget.account(result)
    return result


@pass_context
def _meter_out(context: Any, value: Any) -> str:
    budget = active_budget()
    budget.check_nested(value, "an output ({{ }})")
    text = str(value)
    budget.step()
    budget.account(text)
    return text


#: Filters the rewritten template calls. Filters compile to direct calls (cheaper than the
#: sandbox's ``call``); ``pass_context`` keeps Jinja from folding them into constants at compile
#: time, so constant text repeated by a loop is still counted. A template cannot redefine a
#: filter, so it cannot slip past them.
_METERS: dict[str, Callable[..., Any]] = {
    "__ps_iter": _meter_iter,
    "__ps_concat": _meter_concat,
    "__ps_out": _meter_out,
}


class _Meter(NodeTransformer):
    """Rewrites a parsed template so loops, ``~`` and output go through the meters above."""

    @staticmethod
    def _meter(name: str, first: nodes.Expr, rest: list[nodes.Expr] | None = None) -> nodes.Filter:
        return nodes.Filter(first, name, rest or [], [], None, None)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._meter("__ps_iter", node.iter)  # type: ignore[arg-type]
        if node.recursive:  # loop(children) iterates again: meter those iterables too
            for call in node.find_all(nodes.Call):
                if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
                    call.args[0] = self._meter("__ps_iter", call.args[0])
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        first, *rest = node.nodes
        return self._meter("__ps_concat", first, rest)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._meter("__ps_out", child) for child in node.nodes]
        return node


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` with the limits described in the module docstring."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters.update(_METERS)
        self.globals.pop("lipsum", None)  # generates text in a loop the meters cannot see
        self.globals["range"] = _bounded_range

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        result: nodes.Template = _Meter().visit(tree)
        return result

    # Sandbox hooks.

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = active_budget()
        budget.step()
        if operator == "*":
            _check_mul(budget, left, right)
        elif operator == "**":
            _check_pow(budget, left, right)
        elif operator == "+":
            _check_add(budget, left, right)
        elif operator == "%":
            _check_percent(budget, left, right)
        result = self.binop_table[operator](left, right)
        budget.account(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = active_budget()
        budget.step()
        args = _check_str_method(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        budget.account(result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            budget = active_budget()
            budget.step()
            values: list[Any] = list(args) + list(kwargs.values())
            if is_map and args and isinstance(args[0], Mapping):
                values = list(args[0].values())
            for item in values:
                budget.check_nested(item, "a str.format() value")
            _check_format_spec(budget, fmt, values)
            result = wrapped(*args, **kwargs)
            budget.account(result)
            return result

        return functools.update_wrapper(bounded, value)
