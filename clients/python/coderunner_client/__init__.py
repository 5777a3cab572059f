"""A typed Python client for code-runner, sync (`Client`) and async (`AsyncClient`), and the `coderunner` CLI.

from coderunner_client import Client

with Client("http://127.0.0.1:8000", key) as cr:
    job = cr.run("print(input()*2)", runtime="python", stdin="ab")
    print(job.status, job.result.stdout if job.result else "")
"""

from coderunner_client._core import RetryPolicy, __version__
from coderunner_client.aio import AsyncClient
from coderunner_client.client import Client
from coderunner_client.errors import (
    AuthenticationError,
    BadRequestError,
    CodeRunnerError,
    ConflictError,
    NotFoundError,
    QueueFullError,
    RateLimitError,
    RetryableError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from coderunner_client.models import (
    Event,
    EventBatch,
    Job,
    JobPage,
    QueueStatus,
    Result,
    Runtime,
    Runtimes,
    TestCaseResult,
    TestSummary,
    Usage,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "CodeRunnerError",
    "ConflictError",
    "Event",
    "EventBatch",
    "Job",
    "JobPage",
    "NotFoundError",
    "QueueFullError",
    "QueueStatus",
    "RateLimitError",
    "Result",
    "RetryPolicy",
    "RetryableError",
    "Runtime",
    "Runtimes",
    "ServerError",
    "ServiceUnavailableError",
    "TestCaseResult",
    "TestSummary",
    "TransportError",
    "Usage",
    "ValidationError",
    "WaitTimeout",
    "__version__",
]
