"""Sagas: the undo registered by ``@activity(compensate=...)``, checked at decoration and run in
reverse order of completion when a workflow (or a `durable.saga` block) fails.

Each completed compensable activity pushes an `Undo` onto the innermost open `Scope` of its
task. Replay rebuilds the stacks exactly, because a replayed activity call pushes the same
entry as the original one (same arguments, the recorded result and completion time). Unwinding
a scope runs its undos newest-first (by completion time, then step number), each as a recorded
``compensation`` step; a crash during the unwind replays the run, which raises the same error,
rebuilds the same stack and skips the undos already recorded.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from durable._errors import CompensationFailed
from durable._registry import ActivityDefinition
from durable._retry import NO_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "Compensator",
    "SagaBlock",
    "Scope",
    "Undo",
    "current_scope",
    "undo_definition",
]

DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_interval=0.5, backoff=2.0, max_interval=30.0
)
"""An undo that fails is retried with backoff: 5 attempts over about 7.5 s, then recorded."""

_P = inspect.Parameter


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def undo_definition(
    activity_fn: Callable[..., Any],
    activity_name: str,
    undo: Callable[..., Any],
    undo_defn: ActivityDefinition | None,
    retry: RetryPolicy | None,
) -> tuple[ActivityDefinition, bool]:
    """Check that ``undo`` can take ``activity_fn``'s arguments, and describe the undo step.

    The undo is called with the activity's own arguments, bound to the activity's signature
    (defaults applied), and with ``result=`` the activity's return value when it declares a
    keyword-only parameter ``result``.

    Args:
        activity_fn: the activity function.
        activity_name: its registered name (for messages).
        undo: the ``compensate=`` callable.
        undo_defn: the undo's own definition when it is itself an ``@activity``.
        retry: ``compensate_retry=``; otherwise the undo activity's retry, else the default.

    Returns:
        The definition the engine runs the undo with, and whether it wants ``result=``.

    Raises:
        TypeError: the undo cannot accept the activity's arguments.
    """
    fn = undo_defn.fn if undo_defn is not None else undo
    try:
        undo_sig = inspect.signature(fn)
        activity_sig = inspect.signature(activity_fn)
    except (TypeError, ValueError) as exc:  # builtins without a signature
        raise TypeError(
            f"cannot read the signature of compensate={_name(undo)} for activity "
            f"{activity_name!r}: {exc}; wrap it in a def that takes the activity's arguments"
        ) from None
    result = undo_sig.parameters.get("result")
    if result is not None and result.kind is not _P.KEYWORD_ONLY:
        raise TypeError(
            f"compensate={_name(fn)} for activity {activity_name!r} has a 'result' parameter "
            "that is not keyword-only; declare it after '*' (def undo(..., *, result))"
        )
    undo_kinds = {p.kind for p in undo_sig.parameters.values()}
    for kind, what in ((_P.VAR_POSITIONAL, "*args"), (_P.VAR_KEYWORD, "**kwargs")):
        if any(p.kind is kind for p in activity_sig.parameters.values()) and (
            kind not in undo_kinds
        ):
            raise TypeError(
                f"compensate={_name(fn)}{undo_sig} cannot undo activity {activity_name!r}"
                f"{activity_sig}: the activity takes {what}, so the undo must take {what} too"
            )
    positional: list[object] = []
    keywords: dict[str, object] = {}
    for param in activity_sig.parameters.values():
        if param.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
            positional.append(object())
        elif param.kind is _P.VAR_POSITIONAL:
            positional.extend((object(), object()))
        elif param.kind is _P.KEYWORD_ONLY:
            keywords[param.name] = object()
        else:
            keywords["__durable_any_keyword__"] = object()
    if result is not None:
        keywords["result"] = None
    try:
        undo_sig.bind(*positional, **keywords)
    except TypeError as exc:
        raise TypeError(
            f"compensate={_name(fn)}{undo_sig} cannot undo activity {activity_name!r}"
            f"{activity_sig}: it is called with the activity's arguments (plus an optional "
            f"keyword-only 'result'), and binding them fails: {exc}"
        ) from None
    defn = ActivityDefinition(
        name=undo_defn.name if undo_defn is not None else _name(fn),
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        retry=retry or _undo_retry(undo_defn),
        timeout=undo_defn.timeout if undo_defn is not None else None,
        crash_limit=retry is not None or (undo_defn is not None and undo_defn.crash_limit),
    )
    return defn, result is not None


def _undo_retry(undo_defn: ActivityDefinition | None) -> RetryPolicy:
    """An undo activity keeps its own ``retry=``; one without (and a plain function) gets the
    default compensation policy, since an undo that gives up leaves the world half-undone."""
    if undo_defn is None or undo_defn.retry is NO_RETRY:
        return DEFAULT_COMPENSATION_RETRY
    return undo_defn.retry


@dataclass(slots=True)
class Undo:
    """One completed compensable activity: what to call to undo it."""

    seq: int
    finished_at: float
    defn: ActivityDefinition
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class Scope:
    """The undos registered inside one saga scope (the whole workflow, or a `durable.saga`).

    Once its block has ended, a scope forwards late arrivals (an activity of a task that the
    block started but did not wait for) to the scope that enclosed it.
    """

    entries: list[Undo] = field(default_factory=list)
    parent: Scope | None = None
    closed: bool = False

    def push(self, undo: Undo) -> None:
        """Register ``undo`` here, or in the nearest enclosing scope still open."""
        scope = self
        while scope.closed and scope.parent is not None:
            scope = scope.parent
        scope.entries.append(undo)

    def unwind_order(self) -> list[Undo]:
        """Newest completion first; ties (concurrent completions) by step number."""
        return sorted(self.entries, key=lambda u: (u.finished_at, u.seq), reverse=True)


_scope: ContextVar[Scope | None] = ContextVar("durable_saga_scope", default=None)


def current_scope() -> ContextVar[Scope | None]:
    """The context variable holding the innermost open scope of the current task."""
    return _scope


class Compensator:
    """The undo stacks of one run: undos pushed as compensable activities complete, unwound
    newest-first when the run (or a `durable.saga` block) fails.

    Args:
        run_id: the run, for `CompensationFailed`.
        compensate: runs one undo as a recorded ``compensation`` step (the engine's).
        stopped: whether the run has a fatal error (then an undo's failure is not collected:
            it stops the unwind).
    """

    __slots__ = ("_compensate", "_run_id", "_stopped", "root")

    def __init__(
        self,
        run_id: str,
        compensate: Callable[[Undo], Awaitable[None]],
        stopped: Callable[[], bool],
    ) -> None:
        """See the class docstring."""
        self._run_id = run_id
        self._compensate = compensate
        self._stopped = stopped
        self.root = Scope()  # undos of the whole run (outside any durable.saga block)

    def push(
        self,
        defn: ActivityDefinition,
        seq: int,
        finished_at: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        instance: Any,
        result: Any,
    ) -> None:
        """Register the undo of compensable activity ``defn`` (step ``seq``, called with
        ``args``/``kwargs`` on ``instance``, returned ``result``) in the current scope."""
        assert defn.undo is not None and defn.signature is not None
        if instance is not None:
            args = (instance, *args)
        bound = defn.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        undo_kwargs = dict(bound.kwargs)
        if defn.undo_wants_result:
            undo_kwargs["result"] = result
        scope = current_scope().get() or self.root
        scope.push(Undo(seq, finished_at, defn.undo, tuple(bound.args), undo_kwargs))

    async def unwind(self, scope: Scope) -> list[tuple[str, BaseException]]:
        """Run ``scope``'s undos newest-first, each a recorded ``compensation`` step.

        Returns:
            ``(which undo, its final error)`` for every undo that still failed after retries.
        """
        errors: list[tuple[str, BaseException]] = []
        for undo in scope.unwind_order():
            try:
                await self._compensate(undo)
            except Exception as exc:
                if self._stopped():
                    raise
                errors.append((f"{undo.defn.name} (undoing step {undo.seq})", exc))
        scope.entries.clear()
        return errors

    def failed(
        self, error: BaseException | None, errors: list[tuple[str, BaseException]]
    ) -> CompensationFailed:
        """The `CompensationFailed` for undos that failed while undoing ``error``."""
        return CompensationFailed(
            self._run_id, error, [e for _, e in errors], [n for n, _ in errors]
        )

    def block(self) -> AbstractAsyncContextManager[None]:
        """A `durable.saga` block of this run."""
        return SagaBlock(self)


class SagaBlock:
    """``async with durable.saga():``: undo only what completed inside the block if it raises.

    On success the block's undos join the enclosing scope (so a later failure of the workflow
    still undoes them). On an exception the block's undos run newest-first, then the exception
    propagates (or `CompensationFailed`, carrying it, when undos still failed). Fatal errors
    (divergence, lost lease, store failure) and cancellation by the event loop do not
    compensate: they stop the executor, and the run is resumed or compensated later.
    """

    def __init__(self, compensator: Compensator) -> None:
        """A block of ``compensator``'s run."""
        self._compensator = compensator
        self._scope = Scope()
        self._token: Token[Scope | None] | None = None

    async def __aenter__(self) -> None:
        """Open the block's scope in the current task."""
        self._token = current_scope().set(self._scope)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the scope: pass its undos on, or run them if the block raised."""
        assert self._token is not None
        current_scope().reset(self._token)
        compensator = self._compensator
        parent = current_scope().get() or compensator.root
        self._scope.parent = parent
        if exc is None or not isinstance(exc, Exception) or compensator._stopped():
            for undo in self._scope.entries:
                parent.push(undo)
            self._scope.entries.clear()
            self._scope.closed = True
            return
        try:
            errors = await compensator.unwind(self._scope)
        finally:
            self._scope.closed = True
        if errors:
            raise compensator.failed(exc, errors) from exc
