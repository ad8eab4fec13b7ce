"""Decorated functions still are the functions: same behaviour and introspection outside a run."""

from __future__ import annotations

import inspect

import pytest

import durable
from durable._decorators import definition_of
from durable._registry import ActivityDefinition, WorkflowDefinition


@durable.activity
async def fetch(url: str, *, retries: int = 1) -> str:
    """Fetch a URL."""
    return f"{url}:{retries}"


@durable.activity(name="billing.charge", retry=durable.RetryPolicy(max_attempts=2), timeout=3)
def charge(amount: int) -> int:
    """Charge money."""
    return amount * 2


@durable.workflow
async def flow(x: int) -> int:
    """A workflow."""
    return x + 1


@durable.workflow(name="custom.flow")
async def named_flow() -> str:
    return "named"


class Shop:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @durable.activity
    async def price(self, amount: int) -> int:
        return amount * self.factor

    @durable.activity
    def sync_price(self, amount: int) -> int:
        return amount + self.factor


def test_introspection_is_preserved() -> None:
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch a URL."
    assert str(inspect.signature(fetch)) == "(url: 'str', *, retries: 'int' = 1) -> 'str'"
    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(charge)
    assert inspect.iscoroutinefunction(flow)
    assert charge.__name__ == "charge" and charge.__doc__ == "Charge money."


def test_names_default_to_module_and_qualname() -> None:
    defn = definition_of(fetch)
    assert isinstance(defn, ActivityDefinition) and defn.name == f"{__name__}.fetch"
    assert defn.is_async and defn.retry.max_attempts == 1 and defn.timeout is None
    charge_defn = definition_of(charge)
    assert isinstance(charge_defn, ActivityDefinition)
    assert charge_defn.name == "billing.charge" and charge_defn.timeout == 3.0
    assert charge_defn.retry.max_attempts == 2 and not charge_defn.is_async
    wf = definition_of(named_flow)
    assert isinstance(wf, WorkflowDefinition) and wf.name == "custom.flow"
    assert definition_of(Shop.price) is not None
    assert definition_of(Shop(2).price) is not None


async def test_outside_a_run_they_are_plain_functions() -> None:
    assert await fetch("x", retries=3) == "x:3"
    assert charge(4) == 8
    assert await flow(1) == 2
    shop = Shop(3)
    assert await shop.price(5) == 15
    assert shop.sync_price(5) == 8


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_methods_work_inside_a_run(tmp_path: object) -> None:
    @durable.workflow
    async def uses_methods() -> tuple[int, int]:
        shop = Shop(3)
        return await shop.price(5), await shop.sync_price(5)  # type: ignore[misc]

    assert await durable.execute(uses_methods, id="m", store="memory://decorators") == (15, 8)
    history = await durable.get_handle("m", "memory://decorators").history()
    assert [s.name for s in history] == [f"{__name__}.Shop.price", f"{__name__}.Shop.sync_price"]


def test_workflow_must_be_async() -> None:
    with pytest.raises(TypeError, match="async def"):

        @durable.workflow
        def not_async() -> None: ...


def test_bad_decorator_arguments_fail_at_import_time() -> None:
    with pytest.raises(ValueError, match="timeout"):
        durable.activity(timeout=-1)
    with pytest.raises(TypeError, match="RetryPolicy"):
        durable.activity(retry=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="compensate"):
        durable.activity(compensate="undo")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="name"):
        durable.workflow(name="")
    with pytest.raises(TypeError, match="already decorated"):
        durable.activity(fetch)


def test_two_functions_cannot_share_a_workflow_name() -> None:
    @durable.workflow(name="shared.name")
    async def one() -> None: ...

    with pytest.raises(ValueError, match=r"shared\.name"):

        @durable.workflow(name="shared.name")
        async def two() -> None: ...


def test_retry_policy_validates_and_computes_delays() -> None:
    policy = durable.RetryPolicy(max_attempts=5, initial_interval=0.5, backoff=2, max_interval=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3, 3]
    assert policy.retries(ValueError(), 4) and not policy.retries(ValueError(), 5)
    assert not durable.RetryPolicy(non_retryable=(ValueError,)).retries(ValueError(), 1)
    for bad in (
        {"max_attempts": 0},
        {"backoff": 0.5},
        {"initial_interval": -1},
        {"initial_interval": 5, "max_interval": 1},
    ):
        with pytest.raises(ValueError, match="RetryPolicy"):
            durable.RetryPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non_retryable"):
        durable.RetryPolicy(non_retryable=("ValueError",))  # type: ignore[arg-type]
