"""A code tool for an AI agent: run a snippet in the sandbox, hand back what happened as a plain dict.

    CODERUNNER_URL=http://127.0.0.1:8000 CODERUNNER_API_KEY=cr_... python agent_tool.py

`run_snippet` never raises for the snippet's own failures (they are results the agent should read), and
turns platform refusals (quota, bad runtime) into a verdict too, so the agent loop never crashes on a tool call.
"""

from __future__ import annotations

import json
import os
from typing import Any

from coderunner_client import Client, CodeRunnerError

LANGUAGES = {"python": "python3", "javascript": "node", "js": "node", "bash": "bash", "shell": "bash"}

_client = Client(os.environ["CODERUNNER_URL"], os.environ["CODERUNNER_API_KEY"])


def run_snippet(code: str, language: str = "python", stdin: str = "", time_limit_s: float = 5) -> dict[str, Any]:
    """Run `code`; {"verdict", "exit_code", "stdout", "stderr"}. Verdicts: ok, error (non-zero exit or
    signal), timeout, memory_limit, output_limit, refused (the platform said no: the message is in stderr)."""
    try:
        runtime = LANGUAGES.get(language, language)
        job = _client.run(code, runtime=runtime, stdin=stdin, limits={"wall_time_s": time_limit_s})
    except CodeRunnerError as exc:
        return {"verdict": "refused", "exit_code": None, "stdout": "", "stderr": f"{exc.code}: {exc.message}"}
    result = job.result
    if result is None:  # the platform failed (status `error`) or the job was cancelled
        return {"verdict": job.status, "exit_code": None, "stdout": "", "stderr": job.error or ""}
    if job.status == "succeeded":
        verdict = "ok"
    elif job.status == "timed_out":
        verdict = "timeout"
    elif result.reason in ("memory_limit", "output_limit"):
        verdict = result.reason
    else:
        verdict = "error"
    return {"verdict": verdict, "exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}


# What an agent framework would register as the tool's schema.
TOOL = {
    "name": "run_snippet",
    "description": "Run a code snippet in an isolated sandbox and return its stdout, stderr, exit code and verdict.",
    "parameters": {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "language": {"type": "string", "enum": sorted(LANGUAGES)},
            "stdin": {"type": "string"},
        },
        "required": ["code"],
    },
}

if __name__ == "__main__":
    for code, language in [
        ("print(sum(range(10)))", "python"),
        ("console.log([1, 2, 3].map(x => x * x).join(','))", "javascript"),
        ("import sys; print('oops', file=sys.stderr); sys.exit(3)", "python"),
        ("import time; time.sleep(30)", "python"),
        ("print('hi')", "cobol"),
    ]:
        print(json.dumps({"language": language, **run_snippet(code, language, time_limit_s=1)}))
