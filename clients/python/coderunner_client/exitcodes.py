"""What `coderunner run` exits with: the program's own code, or one of ours for each other ending."""

from __future__ import annotations

from coderunner_client.display import first_failing_test, signal_number
from coderunner_client.errors import AuthenticationError, CodeRunnerError, RetryableError, ServerError, TransportError
from coderunner_client.models import Job

EXIT_USAGE = 2
EXIT_REJECTED = 65
EXIT_PLATFORM = 69
EXIT_BUSY = 75
EXIT_AUTH = 77
EXIT_WRONG_ANSWER = 120
EXIT_CANCELLED = 121
EXIT_OUTPUT_LIMIT = 122
EXIT_MEMORY_LIMIT = 123
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""exit codes of `coderunner run`:
  0        the program exited 0 (with --tests: every test accepted)
  {EXIT_USAGE}        bad usage: unknown option, unreadable file, unknown runtime, no key or URL
  {EXIT_REJECTED}       the API refused the job (400, 409, 413, 422: see the message)
  {EXIT_PLATFORM}       platform error: the job ended `error`, a 5xx, or the API cannot be reached
  {EXIT_BUSY}       busy: rate limit or queue full after retries, or --wait-timeout passed (the job goes on)
  {EXIT_AUTH}       the API key was refused (401)
  {EXIT_WRONG_ANSWER}      a test's output was wrong (--tests)
  {EXIT_CANCELLED}      the job was cancelled
  {EXIT_OUTPUT_LIMIT}      output limit
  {EXIT_MEMORY_LIMIT}      memory limit
  {EXIT_TIMEOUT}      time limit (wall or CPU), as timeout(1)
  128+n    killed by signal n (SIGSEGV: 139)
  {EXIT_INTERRUPTED}      interrupted (Ctrl-C): the job was cancelled
  other    the program's own exit code (a program may exit with any of the codes above too)
"""

_BY_REASON = {
    "wall_time": EXIT_TIMEOUT,
    "cpu_time": EXIT_TIMEOUT,
    "time_limit": EXIT_TIMEOUT,
    "memory_limit": EXIT_MEMORY_LIMIT,
    "output_limit": EXIT_OUTPUT_LIMIT,
    "cancelled": EXIT_CANCELLED,
    "wrong_answer": EXIT_WRONG_ANSWER,
}


def exit_code(job: Job) -> int:
    """The exit code for a finished job (see EXIT_CODES)."""
    result = job.result
    if job.status == "succeeded":
        return 0
    if job.status == "cancelled":
        return EXIT_CANCELLED
    if job.status == "error" or result is None:
        return EXIT_PLATFORM
    failing = first_failing_test(job)
    for reason in (failing[1].verdict if failing else None, result.reason):
        if reason in _BY_REASON:
            return _BY_REASON[reason]
    if job.status == "timed_out":
        return EXIT_TIMEOUT
    if result.signal:
        number = signal_number(result.signal)
        return 128 + number if number else EXIT_PLATFORM
    if result.exit_code:
        return result.exit_code
    return EXIT_WRONG_ANSWER if failing else EXIT_PLATFORM


def error_exit_code(exc: CodeRunnerError) -> int:
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, RetryableError):
        return EXIT_BUSY
    if isinstance(exc, ServerError | TransportError):
        return EXIT_PLATFORM
    return EXIT_REJECTED
