"""What a plain `pip install durable-sdk` (no extras) can do: the Postgres driver is imported
only when a ``postgresql://`` URL is opened, and its absence says which extra to install.
(`.ci/run` also installs the package without extras into a fresh environment and runs the
quickstart, ``durable --help`` and the memory and SQLite tests there.)"""

from __future__ import annotations

import subprocess
import tempfile
import textwrap
from pathlib import Path

from support import python


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, outside the checkout (whose durable/ folder has no
    backends/ in it)."""
    with tempfile.TemporaryDirectory() as elsewhere:
        return python("-c", textwrap.dedent(code), cwd=Path(elsewhere), timeout=60)


def test_importing_durable_does_not_import_the_postgres_driver() -> None:
    """durable, its stores, its CLI and durable.testing load without psycopg."""
    done = _python(
        """
        import sys
        import durable, durable.backends, durable.testing, durable._cli
        from durable.backends import MemoryStore, SQLStore
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "psycopg")
        print(loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_psycopg_sqlite_works_and_postgres_names_the_extra() -> None:
    """With psycopg missing, SQLite runs; a Postgres URL is a StoreError naming the extra."""
    done = _python(
        """
        import sys, tempfile, os
        sys.modules["psycopg"] = None  # as if it were not installed
        import durable
        from durable.backends import SQLStore

        @durable.workflow(name="install.hello")
        async def hello(name: str) -> str:
            return f"hello {name}"

        path = os.path.join(tempfile.mkdtemp(), "plain.db")
        print(durable.run(hello, "sqlite", id="h", store=f"sqlite:///{path}"))
        try:
            SQLStore("postgresql://someone@127.0.0.1:5432/db")
        except durable.StoreError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first == "hello sqlite"
    assert "pip install 'durable-sdk[postgres]'" in second
    assert "postgresql://someone@127.0.0.1:5432/db" in second


def test_a_memory_store_user_imports_no_sqlalchemy() -> None:
    """durable with MemoryStore and durable.testing runs without loading SQLAlchemy (SQLStore,
    and SQLAlchemy with it, is imported on first use)."""
    done = _python(
        """
        import sys
        import anyio
        import durable
        from durable.backends import MemoryStore
        from durable.testing import WorkflowEnvironment

        @durable.activity
        async def double(x: int) -> int:
            return 2 * x

        @durable.workflow
        async def flow(x: int) -> int:
            return await double(x)

        assert durable.run(flow, 4, id="m", store=MemoryStore()) == 8

        async def in_env() -> int:
            async with WorkflowEnvironment() as env:
                return await env.execute(flow, 5, id="e")

        assert anyio.run(in_env) == 10
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
