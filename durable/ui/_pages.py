"""The web view's HTML: the runs page and the run page, rendered from `RunInfo` / `RunView`.

Pure functions of their inputs (no Starlette here). Every value that comes from the store (run
ids, workflow and step names, decoded payloads, errors) goes through `_e` (``html.escape``,
quotes included) before it reaches the page; URLs are built with ``urllib.parse`` quoting. The
page's script (static/app.js) likewise writes values only through ``textContent``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from durable._inspect import RunView, StepView
from durable._runs import RunInfo
from durable._types import RunStatus, StepKind, StepStatus

__all__ = ["Filters", "error_page", "run_page", "runs_page"]

INSTANT_KINDS = frozenset(
    {
        StepKind.NOW,
        StepKind.UUID4,
        StepKind.RANDOM,
        StepKind.PATCH,
        StepKind.SIGNAL_SEND,
        StepKind.EVENT,
        StepKind.STREAM,
        StepKind.STREAM_CLOSE,
    }
)
"""Steps that take no time worth drawing: shown as a mark, not a bar."""

KIND_LABELS = {
    StepKind.ACTIVITY: "activity",
    StepKind.COMPENSATION: "compensation",
    StepKind.TIMER: "sleep",
    StepKind.SIGNAL: "wait signal",
    StepKind.CHILD: "child run",
    StepKind.NOW: "now",
    StepKind.UUID4: "uuid4",
    StepKind.RANDOM: "random",
    StepKind.PATCH: "patch",
    StepKind.SIGNAL_SEND: "send signal",
    StepKind.FIRST: "first of",
    StepKind.EVENT: "set event",
    StepKind.STREAM: "stream write",
    StepKind.STREAM_CLOSE: "stream close",
}

LEGEND = (
    (StepKind.ACTIVITY, "activity"),
    (StepKind.COMPENSATION, "compensation"),
    (StepKind.TIMER, "sleep"),
    (StepKind.SIGNAL, "signal wait"),
    (StepKind.CHILD, "child run"),
    (StepKind.NOW, "instant (now, uuid4, random, patch, send, event, stream)"),
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Filters:
    """The runs page's query: its filters, and where in the pages it is."""

    status: str = ""
    workflow: str = ""
    prefix: str = ""
    cursor: str = ""
    back: tuple[str, ...] = ()
    """The cursors of the newer pages, nearest last (``""`` is the first page)."""
    limit: int = 50

    def query(self, **changes: object) -> str:
        """This query (with ``changes``) as a URL query string, empty values left out."""
        values: dict[str, object] = {
            "status": self.status,
            "workflow": self.workflow,
            "prefix": self.prefix,
            "cursor": self.cursor,
            "back": list(self.back),
            "limit": "" if self.limit == 50 else self.limit,
        }
        values.update(changes)
        pairs: list[tuple[str, str]] = []
        for key, value in values.items():
            for item in value if isinstance(value, list | tuple) else [value]:
                if key == "back" or item not in ("", None):
                    pairs.append((key, str(item)))
        return urlencode(pairs)


def run_href(root: str, run_id: str) -> str:
    """The run page's URL (a query parameter: ids may hold ``/``, ``?``, ``#``, ``..``)."""
    return f"{root}/run?{urlencode({'id': run_id})}"


def _time(when: datetime | None) -> str:
    return "" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def _time_tag(when: datetime | None) -> str:
    if when is None:
        return '<span class="none">—</span>'
    return f'<time datetime="{_e(when.isoformat())}">{_e(_time(when))}</time>'


def duration_text(seconds: float) -> str:
    """``0.35 s``, ``12 ms``, ``4 min 3 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _status(status: RunStatus | StepStatus | str) -> str:
    return f'<span class="status s-{_e(status)}">{_e(str(status).replace("_", " "))}</span>'


def _page(root: str, title: str, page: str, body: str, attrs: str = "") -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · durable</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{_e(root)}/static/style.css">
<script src="{_e(root)}/static/app.js" defer></script>
</head>
<body data-page="{page}" data-root="{_e(root)}"{attrs}>
<header class="top"><a class="brand" href="{_e(root)}/">durable</a><span>runs</span></header>
<main>
{body}
</main>
</body>
</html>
"""


def error_page(root: str, title: str, message: str) -> str:
    """A page that says what is wrong (no such run, a bad filter)."""
    body = (
        f'<nav class="crumbs"><a href="{_e(root)}/">Runs</a></nav>'
        f'<h1>{_e(title)}</h1><p class="banner error">{_e(message)}</p>'
    )
    return _page(root, title, "error", body)


# -- the runs page -----------------------------------------------------------------------------


def runs_page(
    root: str,
    filters: Filters,
    runs: Sequence[RunInfo],
    next_cursor: str | None,
    problem: str | None = None,
) -> str:
    """The list of runs, newest first, with its filter form and pager."""
    options = ['<option value="">any status</option>']
    for status in RunStatus:
        selected = " selected" if status.value == filters.status else ""
        label = _e(status.value.replace("_", " "))
        options.append(f'<option value="{_e(status.value)}"{selected}>{label}</option>')
    form = f"""<form class="filters" method="get" action="{_e(root)}/">
<label>Status <select name="status">{"".join(options)}</select></label>
<label>Workflow <input name="workflow" value="{_e(filters.workflow)}" placeholder="name"></label>
<label>Id prefix <input name="prefix" value="{_e(filters.prefix)}" placeholder="order-"></label>
<button type="submit">Filter</button>
<a class="clear" href="{_e(root)}/">Clear</a>
<span class="refresh"><label><input type="checkbox" id="auto-refresh" checked> auto-refresh</label>
<span id="refreshed" class="muted"></span></span>
</form>"""
    rows = "\n".join(_run_row(root, run) for run in runs)
    api = f"{root}/api/runs?{filters.query(back=[])}"
    banner = f'<p class="banner error">{_e(problem)}</p>' if problem else ""
    body = f"""<h1>Runs</h1>
{form}
{banner}
<table class="runs" id="runs" data-api="{_e(api)}">
<thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Created (UTC)</th>
<th>Updated (UTC)</th><th class="num">Attempts</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p class="empty" id="runs-empty"{" hidden" if runs else ""}>No runs match.</p>
{_pager(root, filters, next_cursor)}"""
    return _page(root, "Runs", "runs", body)


def _run_row(root: str, run: RunInfo) -> str:
    parent = (
        f'<span class="muted child-of">child of {_e(run.parent_id)}</span>' if run.parent_id else ""
    )
    return (
        f'<tr data-id="{_e(run.id)}">'
        f'<td class="id"><a href="{_e(run_href(root, run.id))}">{_e(run.id)}</a>{parent}</td>'
        f"<td>{_e(run.workflow)}</td><td>{_status(run.status)}</td>"
        f"<td>{_time_tag(run.created_at)}</td><td>{_time_tag(run.updated_at)}</td>"
        f'<td class="num">{run.attempts}</td></tr>'
    )


def _pager(root: str, filters: Filters, next_cursor: str | None) -> str:
    newer = older = ""
    if filters.cursor or filters.back:
        previous = filters.back[-1] if filters.back else ""
        query = filters.query(cursor=previous, back=list(filters.back[:-1]))
        newer = f'<a rel="prev" href="{_e(root)}/?{_e(query)}">← Newer</a>'
    if next_cursor:
        query = filters.query(cursor=next_cursor, back=[*filters.back, filters.cursor])
        older = f'<a rel="next" href="{_e(root)}/?{_e(query)}">Older →</a>'
    return f'<nav class="pager" id="pager">{newer}{older}</nav>'


# -- the run page ------------------------------------------------------------------------------


def signature(view: RunView) -> str:
    """What changes when the run page would: the script reloads the page's live parts when
    the JSON endpoint's signature differs from the one rendered."""
    steps = ",".join(f"{step.seq}{step.status}{step.attempts}" for step in view.steps)
    children = ",".join(f"{child.id}{child.status}" for child in view.children)
    return f"{view.info.status}|{view.info.updated_at.isoformat()}|{steps}|{children}"


def run_page(root: str, view: RunView, now: datetime) -> str:
    """One run: summary, actions, arguments and outcome, timeline, steps and children."""
    info = view.info
    crumbs = [f'<a href="{_e(root)}/">Runs</a>']
    if info.parent_id:
        crumbs.append(
            f'<a class="parent" href="{_e(run_href(root, info.parent_id))}">'
            f"{_e(info.parent_id)}</a>"
        )
    crumbs.append(f"<span>{_e(info.id)}</span>")
    api = f"{root}/api/run?{urlencode({'id': info.id})}"
    body = f"""<nav class="crumbs">{" / ".join(crumbs)}</nav>
<div class="head">
<div id="live-head" data-live>{_head(root, view)}</div>
{_actions(info)}
</div>
<div id="live-body" data-live>{_body(root, view, now)}</div>"""
    attrs = (
        f' data-run-id="{_e(info.id)}" data-api="{_e(api)}"'
        f' data-signature="{_e(signature(view))}"'
        f' data-finished="{"true" if info.status.finished else "false"}"'
    )
    return _page(root, info.id, "run", body, attrs)


def _head(root: str, view: RunView) -> str:
    info = view.info
    parent = (
        f'<a href="{_e(run_href(root, info.parent_id))}">{_e(info.parent_id)}</a>'
        if info.parent_id
        else '<span class="none">—</span>'
    )
    rows = [
        ("Workflow", _e(info.workflow)),
        ("Status", _status(info.status)),
        ("Created", _time_tag(info.created_at)),
        ("Updated", _time_tag(info.updated_at)),
    ]
    if info.wake_at is not None and not info.status.finished:
        rows.append(("Wakes at", _time_tag(info.wake_at)))
    if info.deadline is not None:
        rows.append(("Deadline", _time_tag(info.deadline)))
    rows += [
        ("Attempts", str(info.attempts)),
        ("Recoveries", str(info.recoveries)),
        ("Code version", _e(info.code_version) if info.code_version else "—"),
    ]
    if info.generation > 1:  # continued as new: the steps shown are this generation's
        rows.append(("Generation", str(info.generation)))
    if info.queue is not None:
        placed = _e(info.queue)
        if info.queue_key is not None:
            placed += f" (key {_e(info.queue_key)})"
        rows.append(("Queue", f"{placed}, priority {info.priority}"))
    rows += [
        ("Parent", parent),
        ("Children", str(len(view.children))),
    ]
    summary = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return (
        f'<h1><span class="run-id">{_e(info.id)}</span> {_status(info.status)}</h1>'
        f'<dl class="summary">{summary}</dl>'
    )


def _actions(info: RunInfo) -> str:
    return f"""<section class="actions" aria-label="Actions">
<h2>Actions</h2>
<div class="buttons">
<button type="button" data-action="cancel" class="danger">Cancel</button>
<button type="button" data-action="retry">Retry</button>
<button type="button" data-action="pause">Pause</button>
<button type="button" data-action="resume">Resume</button>
</div>
<label class="check"><input type="checkbox" id="after-compensation"> retry after compensation
(re-runs the whole body)</label>
<form id="signal-form" class="signal">
<label>Signal <input name="name" required placeholder="approve"></label>
<label>Payload (JSON) <textarea name="payload" rows="2" placeholder="true"></textarea></label>
<button type="submit">Send signal</button>
</form>
<p id="action-result" role="status" aria-live="polite" data-run-id="{_e(info.id)}"></p>
</section>"""


def _body(root: str, view: RunView, now: datetime) -> str:
    info = view.info
    parts = [f'<section><h2>Arguments</h2><pre class="value">{_e(view.args)}</pre></section>']
    if view.result is not None:
        parts.append(
            f'<section><h2>Result</h2><pre class="value">{_e(view.result)}</pre></section>'
        )
    if info.error:
        parts.append(f"<section><h2>Error</h2>{_error_details(info.error, open_=True)}</section>")
    parts.append(_timeline(root, view, now))
    parts.append(_steps_table(root, view.steps))
    if view.children:
        rows = "\n".join(_run_row(root, child) for child in view.children)
        parts.append(
            '<section><h2>Children</h2><table class="runs children">'
            "<thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Created (UTC)</th>"
            '<th>Updated (UTC)</th><th class="num">Attempts</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class _Scale:
    start: datetime
    span: float  # seconds; > 0

    def at(self, when: datetime) -> float:
        """``when`` as a percentage of the width, clamped to [0, 100]."""
        return min(100.0, max(0.0, (when - self.start).total_seconds() / self.span * 100))


def _scale(view: RunView, now: datetime) -> tuple[_Scale, datetime]:
    """The timeline's extent: from the run's creation to its end (its last record when it is
    finished, else now). Returns the scale and the end (where open steps are drawn to)."""
    start = min([view.info.created_at, *(step.started_at for step in view.steps)])
    moments = [view.info.updated_at, *(step.started_at for step in view.steps)]
    moments += [step.finished_at for step in view.steps if step.finished_at is not None]
    end = max(moments)
    if not view.info.status.finished:
        end = max(end, now)
    span = max((end - start).total_seconds(), 0.001)
    return _Scale(start, span), end


def _timeline(root: str, view: RunView, now: datetime) -> str:
    if not view.steps:
        return '<section><h2>Timeline</h2><p class="empty">No steps recorded yet.</p></section>'
    scale, end = _scale(view, now)
    ticks = "".join(
        f'<span class="tick" style="left:{pct}%">{_e(duration_text(scale.span * pct / 100))}</span>'
        for pct in (0, 25, 50, 75, 100)
    )
    rows = "\n".join(_timeline_row(root, step, scale, end) for step in view.steps)
    legend = "".join(
        f'<span class="key k-{kind}"><i></i>{_e(label)}</span>' for kind, label in LEGEND
    )
    legend += '<span class="key open"><i></i>in progress</span>'
    legend += '<span class="key failed"><i></i>failed</span>'
    return f"""<section class="timeline-section"><h2>Timeline</h2>
<div class="legend">{legend}</div>
<div class="timeline" id="timeline">
<div class="tl-row tl-axis"><div class="tl-label"></div><div class="tl-track">{ticks}</div></div>
{rows}
</div></section>"""


def _timer_due(step: StepView) -> datetime | None:
    """A sleep's due time: its recorded result is the due time (seconds since the epoch)."""
    if step.kind != StepKind.TIMER or step.result is None:
        return None
    try:
        return datetime.fromtimestamp(float(step.result), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _timeline_row(root: str, step: StepView, scale: _Scale, end: datetime) -> str:
    kind = StepKind(step.kind)
    label = KIND_LABELS.get(kind, str(kind))
    finish = end if step.finished_at is None else step.finished_at
    open_ended = step.finished_at is None
    due = _timer_due(step)
    if due is not None:  # a sleep lasts until it is due, not until it was recorded
        open_ended = due > end
        finish = min(due, end)
    left = scale.at(step.started_at)
    width = max(0.0, scale.at(finish) - left)
    took = (finish - step.started_at).total_seconds()
    took_text = duration_text(took) + (" so far" if open_ended else "")
    if due is not None and open_ended:
        took_text += f", due {_time(due)}"
    if step.attempts > 1:
        took_text += f", {step.attempts} attempts"
    tip = f"#{step.seq} {label} {step.name}: {step.status}, {took_text}"
    classes = ["tl-bar", f"k-{kind}", f"st-{step.status}"]
    if open_ended:
        classes.append("open")
    if kind in INSTANT_KINDS:
        classes.append("instant")
    style = f"left:{left:.3f}%;width:{width:.3f}%"
    bar_class = " ".join(classes)
    name = _e(step.name)
    if step.child_id is not None:
        href = _e(run_href(root, step.child_id))
        bar = f'<a class="{bar_class}" style="{style}" href="{href}" title="{_e(tip)}"></a>'
        name = f'<a href="{href}">{name}</a>'
    else:
        bar = f'<div class="{bar_class}" style="{style}" title="{_e(tip)}"></div>'
    # The duration goes after the bar; before it when the bar reaches the right edge; on it
    # when the bar spans nearly the whole width.
    if left + width <= 75:
        side, position = "after", f"left:{left + width:.3f}%"
    elif left >= 25:
        side, position = "before", f"right:{100 - left:.3f}%"
    else:
        side, position = "on", f"left:{left:.3f}%"
    return (
        f'<div class="tl-row" data-seq="{step.seq}" data-kind="{_e(kind)}">'
        f'<div class="tl-label" title="{_e(step.name)}"><span class="seq">{step.seq}</span>'
        f'<span class="kind k-{kind}">{_e(label)}</span> <span class="name">{name}</span></div>'
        f'<div class="tl-track">{bar}'
        f'<span class="tl-dur {side}" style="{position}">{_e(took_text)}</span></div></div>'
    )


def _error_details(error: str, open_: bool) -> str:
    """An error: its first line (the exception) as the summary, all of it (with the traceback)
    when opened."""
    first = error.strip().splitlines()[0] if error.strip() else "error"
    return (
        f'<details class="traceback"{" open" if open_ else ""}>'
        f'<summary class="error-text">{_e(first)}</summary>'
        f'<pre class="value error-text">{_e(error)}</pre></details>'
    )


def _steps_table(root: str, steps: Iterable[StepView]) -> str:
    rows = []
    for step in steps:
        detail = ""
        if step.error is not None:
            detail = _error_details(step.error, open_=False)
        elif _timer_due(step) is not None:
            detail = f"due {_time_tag(_timer_due(step))}"
        elif step.result is not None:
            detail = f'<code class="result">{_e(step.result)}</code>'
        if step.child_id is not None:
            detail += f' <a href="{_e(run_href(root, step.child_id))}">{_e(step.child_id)}</a>'
        took = "" if step.duration is None else duration_text(step.duration)
        due = _timer_due(step)
        if due is not None:
            took = duration_text((due - step.started_at).total_seconds())
        rows.append(
            f"<tr><td class='num'>{step.seq}</td><td>{_e(KIND_LABELS.get(step.kind, step.kind))}"
            f"</td><td>{_e(step.name)}</td><td>{_status(step.status)}</td>"
            f"<td class='num'>{step.attempts}</td><td>{_time_tag(step.started_at)}</td>"
            f"<td class='num'>{_e(took)}</td><td class='detail'>{detail}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<section><h2>Steps</h2><table class="steps"><thead><tr><th class="num">#</th>'
        "<th>Kind</th><th>Name</th><th>Status</th><th class='num'>Attempts</th>"
        "<th>Started (UTC)</th><th class='num'>Took</th><th>Result / error</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )
