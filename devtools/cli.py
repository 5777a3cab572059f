"""`coderunner keys ...`: the operator's command line (API keys for now).

    coderunner keys create --owner acme --tier pro
    coderunner keys list [--owner acme]
    coderunner keys revoke key_1a2b3c4d5e6f
    coderunner keys set-tier key_1a2b3c4d5e6f enterprise
    coderunner keys set-webhook key_1a2b3c4d5e6f https://example.com/hooks   (or --clear)

It talks to the stage's keys table through the same adapters as the API. `--local` targets a running
`make dev` stack (it reads the endpoint from `.dev/stack.json`, or CODERUNNER_STACK_FILE); otherwise
boto3's usual configuration applies (AWS_PROFILE, AWS_ENDPOINT_URL, ...), so the same commands work
against a real account. The `coderunner` command itself is the client's (coderunner_client.cli: `run`,
`jobs`, `usage`), which hands `keys ...` to `main` here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from chalicelib.domain.errors import CodeRunnerError
from chalicelib.services.ports import ApiKey

DEFAULT_STACK_FILE = Path(__file__).resolve().parents[1] / ".dev" / "stack.json"


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--stage, --local and --json, accepted before or after the command (`keys list --json` too).

    The subcommands' copies default to SUPPRESS, so leaving an option out after the command never resets
    what was given before it.
    """
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--stage", help="stage whose tables to use (default: CODERUNNER_STAGE or 'dev')", **unset)
    parser.add_argument("--local", action="store_true", help="target the running `make dev` stack", **unset)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text", **unset)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coderunner", description="Operate a code-runner stage.")
    _global_options(parser, top=True)
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="create, list, revoke and re-tier API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; the plain key is printed once")
    create.add_argument("--owner", required=True)
    create.add_argument("--tier", required=True)
    listing = actions.add_parser("list", help="list keys (never the plain keys)")
    listing.add_argument("--owner")
    revoke = actions.add_parser("revoke", help="revoke a key: it gets 401 from the next request on")
    revoke.add_argument("key_id")
    set_tier = actions.add_parser("set-tier", help="move a key to another tier")
    set_tier.add_argument("key_id")
    set_tier.add_argument("tier")
    hook = actions.add_parser("set-webhook", help="set (or --clear) a key's default webhook URL")
    hook.add_argument("key_id")
    hook.add_argument("url", nargs="?")
    hook.add_argument("--clear", action="store_true")
    for sub in (keys, create, listing, revoke, set_tier, hook):
        _global_options(sub, top=False)
    return parser


def _use_local_stack() -> None:
    """Point boto3 at the `make dev` stack's moto server, with fake credentials."""
    path = Path(os.environ.get("CODERUNNER_STACK_FILE") or DEFAULT_STACK_FILE)
    if not path.exists():
        raise SystemExit(f"no local stack found ({path} is missing): start it with `make dev`")
    stack = json.loads(path.read_text())
    os.environ.update(stack["environment"])


def iso(unix: float) -> str:
    """A Unix time as the API writes times: ISO 8601, UTC, milliseconds, Z."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "owner": key.owner,
        "tier": key.tier,
        "revoked": key.revoked,
        "created_at": iso(key.created_at),
        "submitted": key.total,
    }


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from chalicelib.bootstrap import get_deps
    from chalicelib.services import keys

    deps = get_deps()
    if args.action == "create":
        plain, key = keys.create_key(deps, args.owner, args.tier)
        record = {"key": plain, **_describe(key)}
        if args.json:
            out.write(json.dumps(record) + "\n")
        else:
            out.write(f"created {key.key_id} for {key.owner} ({key.tier})\n{plain}\n")
            print("store the key now: only its hash is kept, it cannot be shown again", file=sys.stderr)
        return 0
    if args.action == "list":
        found = [k for k in deps.keys.list() if args.owner is None or k.owner == args.owner]
        if args.json:
            out.write(json.dumps([_describe(k) for k in found]) + "\n")
        else:
            for k in found:
                state = "revoked" if k.revoked else "active"
                created = iso(k.created_at)
                out.write(f"{k.key_id}  {k.owner:<20} {k.tier:<11} {state:<8} {created}  submitted={k.total}\n")
        return 0
    if args.action == "set-webhook":
        return _set_webhook(args, out)
    key = keys.revoke_key(deps, args.key_id) if args.action == "revoke" else keys.set_tier(deps, args.key_id, args.tier)
    out.write(
        (json.dumps(_describe(key)) if args.json else f"{key.key_id}: tier={key.tier} revoked={key.revoked}") + "\n"
    )
    return 0


def _set_webhook(args: argparse.Namespace, out: TextIO) -> int:
    """The key's default webhook URL, checked like `PUT /v1/webhook` (https, public addresses)."""
    from chalicelib.bootstrap import get_deps
    from chalicelib.domain.errors import NotFound, ValidationFailed
    from chalicelib.services.webhooks import set_default_url

    if args.clear == (args.url is not None):
        raise ValidationFailed("give a URL or --clear")
    deps = get_deps()
    if not any(k.key_id == args.key_id for k in deps.keys.list()):
        raise NotFound(f"no key '{args.key_id}'")
    result = set_default_url(deps, args.key_id, None if args.clear else args.url)
    out.write(
        (json.dumps({"key_id": args.key_id, **result}) if args.json else f"{args.key_id}: webhook={result['url']}")
        + "\n"
    )
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Parse `argv` and run the command; errors print their message and return 2 (bad input) or 1."""
    args = _parser().parse_args(argv)
    if args.local:
        _use_local_stack()
    if args.stage:
        os.environ["CODERUNNER_STAGE"] = args.stage
    try:
        return _run(args, out)
    except CodeRunnerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
