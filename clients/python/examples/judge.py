"""An online judge's grading loop: grade every submission against the problem's tests, print each verdict.

    CODERUNNER_URL=http://127.0.0.1:8000 CODERUNNER_API_KEY=cr_... python judge.py

The submissions are graded concurrently (AsyncClient); each runs once per test, and the job carries one
verdict per test: accepted, wrong_answer, time_limit, memory_limit or runtime_error.
"""

from __future__ import annotations

import asyncio
import os

from coderunner_client import AsyncClient, Job

# The problem: read two integers, print their sum.
TESTS = [("1 2", "3"), ("10 -4", "6"), ("1000000000 1000000000", "2000000000")]

SUBMISSIONS = {
    "alice": ("python", "a, b = map(int, input().split())\nprint(a + b)"),
    "bob": (
        "node",
        "const [a, b] = require('fs').readFileSync(0, 'utf8').split(' ').map(Number);\nconsole.log(a - b);",
    ),
    "carol": ("bash", "read a b\necho $((a + b))"),
}


def report(name: str, job: Job) -> None:
    tests = job.result.tests if job.result else None
    if tests is None:
        print(f"{name}: {job.status} {job.error or ''}")
        return
    print(f"{name}: {job.status}, {tests.accepted}/{tests.total} tests accepted")
    for number, case in enumerate(tests.cases, 1):
        print(f"  test {number}: {case.verdict} ({case.wall_ms} ms)")


async def main() -> None:
    async with AsyncClient(os.environ["CODERUNNER_URL"], os.environ["CODERUNNER_API_KEY"]) as judge:
        jobs = await asyncio.gather(
            *(
                judge.run(source, runtime=runtime, tests=TESTS, limits={"wall_time_s": 2})
                for runtime, source in SUBMISSIONS.values()
            )
        )
    for name, job in zip(SUBMISSIONS, jobs, strict=True):
        report(name, job)


if __name__ == "__main__":
    asyncio.run(main())
