"""The public API is exactly what `durable.__all__` says, and every class names `durable`."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import durable

EXPECTED = {
    "ActionRefused",
    "ActivityError",
    "ActivityInterrupted",
    "ActivityTimeout",
    "Cancelled",
    "Codec",
    "CodecNotAllowed",
    "CompensationFailed",
    "DurableError",
    "EventTimeout",
    "ExecutorConfig",
    "Info",
    "JSONCodec",
    "LeaseLost",
    "NonDeterminismError",
    "NotAWorkflowError",
    "NotInWorkflowError",
    "OutcomeUnknown",
    "PayloadDecodeError",
    "PickleCodec",
    "PoolTimeout",
    "Queue",
    "RecoveryLimitExceeded",
    "RetryPolicy",
    "RunInfo",
    "RunPage",
    "RunStatus",
    "RunningLoopError",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaVersionError",
    "SerializationError",
    "SignalTimeout",
    "Step",
    "StepKind",
    "StepStatus",
    "StoreError",
    "StreamClosed",
    "StreamRetry",
    "Worker",
    "WorkflowFinished",
    "WorkflowHandle",
    "WorkflowIdConflict",
    "WorkflowNotFound",
    "WorkflowTimeout",
    "activity",
    "close_stores",
    "continue_as_new",
    "delete_schedule",
    "deprecate_patch",
    "execute",
    "executor_config",
    "gather",
    "get_handle",
    "info",
    "list_runs",
    "list_schedules",
    "now",
    "patched",
    "pause_schedule",
    "prune",
    "random",
    "resume_schedule",
    "run",
    "saga",
    "schedule",
    "set_event",
    "signal",
    "sleep",
    "start",
    "stream_close",
    "stream_write",
    "trigger_schedule",
    "uuid4",
    "wait_first",
    "wait_signal",
    "workflow",
}


def test_public_names_are_pinned() -> None:
    assert set(durable.__all__) == EXPECTED
    assert sorted(durable.__all__) == durable.__all__


def test_public_classes_report_the_public_module() -> None:
    for name in durable.__all__:
        obj = getattr(durable, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "durable", name
        assert obj.__doc__, f"durable.{name} has no docstring"


PACKAGE = Path(durable.__file__).parent
# Who may import whom (STYLE.md): a module may import only the modules listed for it.
ALLOWED = {
    "_errors": set(),
    "_types": set(),
    "_clock": set(),
    "_retry": set(),
    "_names": set(),
    "_trust": set(),
    "_stores": {"store"},
    "_codec": {"_errors", "_trust"},
    "store": {"_errors", "_trust", "_types"},
    "_context": {"_errors", "_types", "_registry"},
    "_registry": {"_codec", "_retry"},
    "_config": {"_clock", "_registry", "_types"},
    "_saga": {"_errors", "_registry", "_retry"},
    "_signals": {"_codec", "_errors", "_names", "_registry", "_trust", "store"},
    "_decorators": {"_context", "_codec", "_registry", "_retry", "_saga"},
    "_workflow_api": {"_context", "_decorators", "_errors", "_names", "_types"},
    # events and streams: written by workflow code and activities, read through handles
    "_publish": {"_context", "_decorators", "_errors", "_names"},
    "_streams": {"_codec", "_errors", "_recording", "_types", "store"},
    "_engine": {
        "_context",
        "_tracing",
        "_clock",
        "_codec",
        "_config",
        "_errors",
        "_registry",
        "_saga",
        "_signals",
        "_trust",
        "_types",
        "store",
    },
    "_recording": {
        "_clock",
        "_codec",
        "_errors",
        "_registry",
        "_tracing",
        "_trust",
        "_types",
        "store",
    },
    "_logging": {"_errors", "_types", "store"},
    "_tracing": {"_errors"},
    "_executor": {
        "_clock",
        "_codec",
        "_config",
        "_engine",
        "_errors",
        "_logging",
        "_recording",
        "_registry",
        "_tracing",
        "_trust",
        "_types",
        "store",
    },
    "_worker": {
        "_config",
        "_decorators",
        "_engine",
        "_executor",
        "_logging",
        "_names",
        "_queues",
        "_registry",
        "_schedules",
        "_stores",
        "_tracing",
        "_types",
        "store",
    },
    # cron schedules: the public functions, and the scheduler task a worker runs
    "_schedules": {
        "_client",
        "_clock",
        "_codec",
        "_config",
        "_decorators",
        "_errors",
        "_names",
        "_queues",
        "_registry",
        "_stores",
        "_trust",
        "_types",
        "store",
    },
    "_cli_schedules": {"_cli_runs", "_errors", "_schedules", "_stores", "backends", "store"},
    "_cli": {
        "_cli_runs",
        "_cli_schedules",
        "_errors",
        "_logging",
        "_registry",
        "_retention",
        "_stores",
        "_worker",
        "backends",
    },
    # durable.ui too, imported by name when `durable ui` runs (the optional extra)
    "_cli_runs": {
        "_client",
        "_codec",
        "_errors",
        "_inspect",
        "_runs",
        "_signals",
        "_stores",
        "_types",
        "backends",
        "store",
    },
    "_retention": {"_clock", "_stores", "store"},
    "_history": {"_types", "store"},
    "_runs": {"_errors", "_recording", "_stores", "_types", "store"},
    "_operate": {
        "_clock",
        "_codec",
        "_errors",
        "_names",
        "_registry",
        "_tracing",
        "_trust",
        "_types",
        "store",
    },
    "_inspect": {"_codec", "_errors", "_recording", "_runs", "_types", "store"},
    # the web view (a package): the management API and the run view, never the engine
    "ui": {
        "_client",
        "_codec",
        "_errors",
        "_inspect",
        "_runs",
        "_signals",
        "_stores",
        "_types",
        "store",
        "ui",
    },
    # integrations (optional extras): the public API (`import durable`), and the run context
    # to tell workflow code from an activity
    "contrib": {"_context", "contrib"},
    # queues: started like the client's runs, executed by the client's executor
    "_queues": {
        "_client",
        "_config",
        "_decorators",
        "_executor",
        "_names",
        "_recording",
        "_stores",
        "store",
    },
    "_client": {
        "_context",
        "_operate",
        "_history",
        "_clock",
        "_config",
        "_decorators",
        "_errors",
        "_executor",
        "_names",
        "_recording",
        "_registry",
        "_runs",
        "_signals",
        "_stores",
        "_streams",
        "_types",
        "store",
    },
}


def _durable_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            if module == "durable":
                found.update(alias.name for alias in node.names)
            elif module.startswith("durable."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("durable."):
                    found.add(alias.name.split(".")[1])
    return found


def _module_files(module: str) -> list[Path]:
    """The module's file, or every file of a package (``_engine/``)."""
    single = PACKAGE / f"{module}.py"
    return [single] if single.exists() else sorted((PACKAGE / module).glob("*.py"))


def test_imports_point_down_the_layers() -> None:
    for module, allowed in ALLOWED.items():
        files = _module_files(module)
        assert files, f"durable.{module} not found"
        for path in files:
            imported = _durable_imports(path)
            assert imported <= allowed, (
                f"durable.{module} ({path.name}) imports {imported - allowed}"
            )


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    # backends: test_backends_import_only_the_store_contract; testing: the public toolkit
    assert modules - {"__init__", "__main__", "backends", "testing"} <= set(ALLOWED)


def test_backends_import_only_the_store_contract() -> None:
    for path in (PACKAGE / "backends").glob("*.py"):
        assert _durable_imports(path) <= {"store"}, path.name
