"""How `SQLStore` words a database error: what was being read or written, what went wrong and
what to do, with the URL's password (and any other secret of the URL) masked. Opening
failures are worded in `._sql_open`, with these helpers."""

from __future__ import annotations

from collections.abc import Sequence

from durable.store import Lease, StepRecord, StoreError

from ._redact import redact

__all__ = ["Messages", "duplicate"]


class Messages:
    """The wording of one store's errors.

    Args:
        url: the store's URL for messages (password masked).
        secrets: the URL's secrets, masked in the driver's messages too.
        sqlite: the store is SQLite (else Postgres).
        busy_timeout: SQLite's ``busy_timeout``, named when the write lock stayed taken.
    """

    def __init__(
        self, url: str, secrets: Sequence[str], *, sqlite: bool, busy_timeout: float
    ) -> None:
        self.url = url
        self._secrets = secrets
        self._sqlite = sqlite
        self._busy_timeout = busy_timeout

    def reason(self, exc: BaseException) -> str:
        """The driver's message for ``exc`` on one line, passwords masked."""
        return redact(" ".join(str(getattr(exc, "orig", None) or exc).split()), self._secrets)

    def failure(
        self,
        exc: BaseException,
        write: bool,
        run_id: str | None,
        steps: Sequence[StepRecord],
    ) -> StoreError:
        """The `StoreError` for a database error that retrying cannot cure (Postgres retries
        the others, `._postgres`): what was being read or written, what went wrong, and what
        to do, without the URL's password."""
        reason = self.reason(exc)
        what = "write to" if write else "read from"
        if run_id is not None:
            seqs = sorted({step.seq for step in steps})
            if seqs:
                numbers = ", ".join(str(seq) for seq in seqs)
                what += f" step{'s' if len(seqs) > 1 else ''} {numbers} of run {run_id!r} in"
            else:
                what += f" run {run_id!r} in"
        head = f"the durable store {self.url!r} could not {what} the database ({reason})"
        kept = (
            "; nothing of this write was recorded, and everything recorded before is kept"
            if write
            else ""
        )
        code = str(getattr(getattr(exc, "orig", None) or exc, "sqlstate", None) or "")
        lowered = reason.lower()
        if "database or disk is full" in lowered or code == "53100":
            where = "the database's disk" if self._sqlite else "the database server's disk"
            return StoreError(
                f"{head}: {where} is full{kept}. Free disk space, then run it again: it resumes "
                "where it stopped"
            )
        if "too big" in lowered or "too large" in lowered or code.startswith("54"):
            return StoreError(
                f"{head}: a value is too large for the database{kept}. Retrying cannot help: "
                "make the value smaller (a payload, a name, an idempotency key); one field "
                "holds at most 1 GB (SQLite: 1,000,000,000 bytes) and an indexed one about 2 kB"
            )
        if code.startswith("22"):
            return StoreError(
                f"{head}: the database cannot store a value (a data error){kept}. Retrying "
                "cannot help: the value must change (e.g. text holding a NUL character, or a "
                "number out of the column's range)"
            )
        if code.startswith("23"):
            return StoreError(
                f"{head}: the database refused the row (a constraint){kept}. Retrying cannot "
                "help: the database was changed outside durable, or is damaged"
            )
        if self._sqlite and "locked" in lowered:
            return StoreError(
                f"{head}: another process held the database's write lock for longer than "
                f"busy_timeout ({self._busy_timeout:g} s){kept}"
            )
        return StoreError(f"{head}{kept}")

    def already_recorded(self, lease: Lease, exc: Exception) -> StoreError:
        """A commit's step is recorded already (its key is taken)."""
        return StoreError(
            f"cannot commit steps to run {lease.run_id!r} in {self.url!r}: one of them is "
            f"already recorded (a step is written once); nothing was written "
            f"({self.reason(exc)})"
        )


def duplicate(exc: BaseException) -> bool:
    """An integrity error that says the key is taken (not another constraint)."""
    return getattr(exc, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(exc)
