"""durable: durable execution for ordinary async Python.

Decorate functions with `workflow` and `activity`, run them with `run` / `execute` under an id,
and completed work is never repeated: a crashed, redeployed or resumed run replays its recorded
steps and continues where it stopped. See the README for the model and the guarantees.
"""

from durable._client import (
    WorkflowHandle,
    execute,
    get_handle,
    run,
    signal,
    start,
)
from durable._codec import Codec, JSONCodec, PickleCodec
from durable._config import ExecutorConfig, executor_config
from durable._decorators import activity, workflow
from durable._errors import (
    ActionRefused,
    ActivityError,
    ActivityInterrupted,
    ActivityTimeout,
    Cancelled,
    CodecNotAllowed,
    CompensationFailed,
    DurableError,
    EventTimeout,
    LeaseLost,
    NonDeterminismError,
    NotAWorkflowError,
    NotInWorkflowError,
    OutcomeUnknown,
    PayloadDecodeError,
    PoolTimeout,
    RecoveryLimitExceeded,
    RunningLoopError,
    ScheduleNotFound,
    SchemaVersionError,
    SerializationError,
    SignalTimeout,
    StoreError,
    StreamClosed,
    WorkflowFinished,
    WorkflowIdConflict,
    WorkflowNotFound,
    WorkflowTimeout,
)
from durable._publish import set_event, stream_close, stream_write
from durable._queues import Queue
from durable._retention import prune
from durable._retry import RetryPolicy
from durable._runs import RunInfo, RunPage, list_runs
from durable._schedules import (
    ScheduleInfo,
    delete_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    schedule,
    trigger_schedule,
)
from durable._stores import close_stores
from durable._streams import StreamRetry
from durable._types import Info, RunStatus, Step, StepKind, StepStatus
from durable._worker import Worker
from durable._workflow_api import (
    continue_as_new,
    deprecate_patch,
    gather,
    info,
    now,
    patched,
    random,
    saga,
    sleep,
    uuid4,
    wait_first,
    wait_signal,
)

__all__ = [
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
]

# Public classes say they live in `durable`, not in a private module: tracebacks read better,
# and pickles (which store classes by module path) survive renaming the private modules.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("durable."):
        _obj.__module__ = "durable"
del _name, _obj
