"""Names of the app's own metrics (namespace `chalicelib.adapters.metrics.NAMESPACE`) that the template alarms
on: the code that emits one and the alarm that watches it import the same constant, so neither can drift."""

from __future__ import annotations

# Count of Fargate sandbox launches that failed, emitted by the worker with the dimension TIER_DIMENSION
# (Powertools adds `service`). Alarm: infra/wiring.py `<Tier>FargateLaunchFailuresAlarm`.
FARGATE_LAUNCH_FAILURES = "FargateLaunchFailures"
TIER_DIMENSION = "tier"

# The API's last-resort answers, emitted by app.py's `api` wrapper; each one is a platform bug to fix at its
# source (never the client's fault). BackendRejected: AWS refused a request of ours as invalid (dimensions
# `aws_service`, `code`); UnhandledErrors: an exception nothing mapped (dimension `route`). Alarms:
# infra/alarms.py `ApiBackendRejectedAlarm`, `ApiUnhandledErrorsAlarm` (over every dimension).
BACKEND_REJECTED = "BackendRejected"
UNHANDLED_ERRORS = "UnhandledErrors"

# Count of sandbox answers refused because their MAC did not hold (forged by a job through a hole, or corrupted),
# emitted by the worker (Lambda) and fargate_done (Fargate) with the dimension `sandbox`. Alarm:
# infra/cfn/sandbox_integrity.json `SandboxResultRejectedAlarm` (any one is worth a page).
SANDBOX_RESULT_REJECTED = "SandboxResultRejected"
