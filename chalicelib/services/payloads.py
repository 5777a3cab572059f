"""Large job inputs and results live in the results bucket; the job's record keeps a small part and a reference.

A DynamoDB item holds at most 400 KB, and every write of a job costs a write unit per KB of the whole item (a
job is written three times: submitted, started, ended). So:
- the spec is stored apart when its JSON is over SPEC_INLINE_BYTES (4 KiB): the record keeps it without its
  stdin, files, tests and args, and `spec_ref`; the worker reads the whole spec before it starts the job;
- the result is stored apart when its JSON is over RESULT_INLINE_BYTES (8 KiB): the record keeps a preview
  (each output cut to PREVIEW_CHARS, the test cases' outputs dropped, every verdict and figure kept) and
  `result_ref`;
- `GET /v1/jobs/{id}` returns the whole result, read back from the bucket, unless its answer would be larger
  than RESPONSE_RESULT_BYTES (a Lambda response holds 6 MB, JSON in JSON); then it returns the preview and
  `full_result_url`, a presigned URL to the whole result, valid URL_TTL_S.
The objects expire with the jobs (the bucket's lifecycle rule: the jobs' TTL).
"""

from __future__ import annotations

import json

from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.domain.jobs import Job, JobSpec
from chalicelib.sandbox.models import ExecutionResult, TestSummary
from chalicelib.services.deps import Deps

SPEC_INLINE_BYTES = 4 * 1024
RESULT_INLINE_BYTES = 8 * 1024
PREVIEW_CHARS = 1024
RESPONSE_RESULT_BYTES = 5 * 1024 * 1024
URL_TTL_S = 3600


def spec_key(job_id: str) -> str:
    return f"jobs/{job_id}/spec.json"


def result_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.json"


def stash_spec(deps: Deps, job_id: str, spec: JobSpec) -> tuple[JobSpec, str | None]:
    """The spec to keep in the job's record and where the whole one is, when it is too large to keep."""
    data = spec.model_dump_json().encode()
    if len(data) <= SPEC_INLINE_BYTES or deps.blobs is None:
        return spec, None
    key = spec_key(job_id)
    deps.blobs.put(key, data)
    return spec.model_copy(update={"stdin": "", "files": [], "tests": [], "args": []}), key


def with_whole_spec(deps: Deps, job: Job) -> Job:
    """The job with its whole spec (read from the bucket when the record keeps only a part)."""
    if job.spec_ref is None:
        return job
    data = deps.blobs.get(job.spec_ref) if deps.blobs is not None else None
    if data is None:
        raise DependencyUnavailable(f"the input of job {job.id} is not in the results bucket")
    return job.model_copy(update={"spec": JobSpec.model_validate_json(data)})


def preview(result: ExecutionResult) -> ExecutionResult:
    """The result with its outputs cut short and the test cases' outputs dropped (verdicts and figures kept)."""
    tests = result.tests
    if tests is not None:
        cases = [case.model_copy(update={"stdout": "", "stderr": ""}) for case in tests.cases]
        tests = TestSummary(total=tests.total, accepted=tests.accepted, cases=cases)
    return result.model_copy(
        update={"stdout": result.stdout[:PREVIEW_CHARS], "stderr": result.stderr[:PREVIEW_CHARS], "tests": tests}
    )


def stash_result(deps: Deps, job_id: str, result: ExecutionResult) -> tuple[ExecutionResult, str | None]:
    """The result to keep in the job's record and where the whole one is, when it is too large to keep."""
    data = result.model_dump_json().encode()
    if len(data) <= RESULT_INLINE_BYTES or deps.blobs is None:
        return result, None
    key = result_key(job_id)
    deps.blobs.put(key, data)
    return preview(result), key


def whole_result(deps: Deps, job: Job) -> ExecutionResult | None:
    """The job's whole result: the record's, or the one stored apart (None if it expired)."""
    if job.result_ref is None:
        return job.result
    data = deps.blobs.get(job.result_ref) if deps.blobs is not None else None
    return ExecutionResult.model_validate_json(data) if data is not None else None


def full_result_url(deps: Deps, job: Job) -> str | None:
    """A presigned URL to the whole result stored apart (None when the record holds it whole)."""
    if job.result_ref is None or deps.blobs is None:
        return None
    return deps.blobs.url(job.result_ref, URL_TTL_S)


def answer_size(rendered: object) -> int:
    """Bytes an answer takes in a Lambda proxy response: its JSON, as a JSON string (escaped once more)."""
    return len(json.dumps(json.dumps(rendered)))
