"""What a function's cold start imports: `import app` (every function) and the sandbox function's entry.

Each import runs in a fresh interpreter, as Lambda's would; how long it takes is `make bench`'s business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_sandbox_functions_entry_imports_neither_boto3_nor_moto() -> None:
    modules = _modules_after("import chalicelib.sandbox.lambda_entry")
    assert "chalicelib.sandbox.lambda_entry" in modules
    assert _packages(modules).isdisjoint({"boto3", "botocore", "moto", "s3transfer"})


def test_importing_the_app_loads_no_aws_sdk_adapter_or_use_case() -> None:
    modules = _modules_after("import app")
    assert _packages(modules).isdisjoint({"boto3", "botocore", "moto", "s3transfer", "aws_lambda_powertools"})
    assert not {name for name in modules if name.startswith("chalicelib.adapters")}
    # Use cases and their models come with the first handler that needs them.
    assert {name for name in modules if name.startswith("chalicelib.services.")} <= {"chalicelib.services.ipguard"}
    assert "chalicelib.domain.views" not in modules
    # The settings (pydantic) too: the decorators' numbers come from chalicelib/deployment.py.
    assert _packages(modules).isdisjoint({"pydantic", "pydantic_core", "pydantic_settings"})
    assert "chalicelib.config" not in modules


def test_a_handler_imports_what_it_needs_on_first_use() -> None:
    modules = _modules_after("import app\nnext(app.queries.poll_delays())\napp.logger.append_keys(request_id='r')")
    assert "chalicelib.services.queries" in modules and "aws_lambda_powertools" in modules
    assert "chalicelib.services.batch" not in modules  # the worker's


_CONCURRENT_FIRST_LOGS = """
import threading, app
calls, built = [], app._PowertoolsLogger._build
gate = threading.Barrier(2, timeout=1)  # passes only if two threads are building at once


def counted():
    calls.append(1)
    try:
        gate.wait()
    except threading.BrokenBarrierError:
        pass
    return built()


app._PowertoolsLogger._build = staticmethod(counted)
threads = [threading.Thread(target=app.logger.append_keys, kwargs={"request_id": str(n)}) for n in range(2)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
app.logger.info("logged")
print(len(calls))
"""


def test_the_logger_is_built_once_by_concurrent_first_requests() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = _CONCURRENT_FIRST_LOGS
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split()[-1] == "1"
