"""The web playground in headless Chromium against the local stack, as a user drives it.

Debian's `chromium` (installed by `make install`) driven by Playwright: Playwright's own browser download is
never used. A missing browser fails the test; `CODERUNNER_SKIP_BROWSER=1` skips it on purpose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import ROOT
from tests.e2e.stackproc import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / ".dev"
RUN_TIMEOUT_MS = 60_000
STEP_TIMEOUT_MS = 15_000
EXPECTED_CONSOLE = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium context with a fresh profile, so no key is stored from an earlier run."""
    if os.environ.get("CODERUNNER_SKIP_BROWSER") == "1":
        pytest.skip("CODERUNNER_SKIP_BROWSER=1: the playground's browser test is skipped on request")
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: `make install` installs Debian's chromium "
        "(set CODERUNNER_SKIP_BROWSER=1 to skip this test on purpose)"
    )
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser: Any, stack: StackProcess) -> Iterator[Any]:
    """A fresh tab on the playground, failing the test on any script error or CSP violation."""
    tab = browser.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        # The API's 4xx answers are logged by the browser too; the tests provoke some and check the page shows them.
        if msg.type == "error" and not EXPECTED_CONSOLE.match(msg.text):
            problems.append(f"console: {msg.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("requestfailed", lambda req: problems.append(f"request failed: {req.url} {req.failure}"))
    tab.on("response", lambda resp: problems.append(f"{resp.status}: {resp.url}") if resp.status >= 500 else None)
    tab.goto(stack.base_url + "/")
    yield tab
    seen = list(problems)  # closing the tab may abort a refresh in flight: not a problem of the page
    tab.evaluate("localStorage.clear()")
    tab.close()
    assert not seen, seen


def paste_key(page: Any, key: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_role("button", name="Forget key")).to_be_visible()
    assert key not in page.url


def record_status_lines(page: Any) -> None:
    """Keep every text the live status line shows (read back with `status_lines`)."""
    page.evaluate(
        """() => {
            window.statusLines = [];
            const status = document.getElementById("status");
            new MutationObserver(() => window.statusLines.push(status.textContent))
                .observe(status, {childList: true, characterData: true, subtree: true});
        }"""
    )


def test_paste_a_key_run_python_and_read_its_output(page: Any, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    paste_key(page, stack.make_key("free"))
    expect(page.locator("#runtime option[value=python3]")).to_have_count(1)
    page.get_by_label("Runtime").select_option("python3")
    code = page.get_by_label("Code")
    code.fill("import sys\nfor line in sys.stdin:\n")
    code.press("Control+End")
    code.press("Tab")  # the editor indents instead of moving focus
    code.type("print(sum(range(10)), line.strip())")
    page.get_by_label("Standard input").fill("<b>from the browser</b>")
    record_status_lines(page)

    code.press("Control+Enter")

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=RUN_TIMEOUT_MS)
    assert page.locator("#stdout").text_content() == "45 <b>from the browser</b>\n"  # shown as text, not HTML
    assert page.locator("#stdout b").count() == 0
    expect(page.locator("#r-exit")).to_have_text("0")
    expect(page.locator("#r-wall")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#r-rss")).to_have_text(re.compile(r"^\d+\.\d MB$"))
    lines = page.evaluate("window.statusLines")
    assert any(line.startswith("Queued at") and "starts in" in line for line in lines), lines
    assert lines[-1].startswith("Succeeded"), lines

    page.screenshot(path=str(SCREENSHOTS / "playground.png"), full_page=True)


def test_tests_get_one_verdict_each(page: Any, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    paste_key(page, stack.make_key("free"))
    expect(page.locator("#runtime option[value=python3]")).to_have_count(1)
    page.get_by_label("Code").fill("a, b = map(int, input().split())\nprint(a + b)")
    page.locator("#tests-box summary").click()
    for stdin, expected in (("1 2", "3"), ("2 2", "5")):
        page.get_by_role("button", name="Add test").click()
        page.locator(".test-stdin").last.fill(stdin)
        page.locator(".test-expected").last.fill(expected)
    page.get_by_role("button", name=re.compile("^Run")).click()

    expect(page.locator("#status")).to_have_attribute("data-state", "failed", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#verdicts-summary")).to_have_text("1 of 2 accepted")
    expect(page.locator("#verdict-rows tr")).to_have_count(2)
    expect(page.locator("#verdict-rows tr").nth(0)).to_contain_text("accepted")
    expect(page.locator("#verdict-rows tr").nth(1)).to_contain_text("wrong_answer")


def test_api_errors_are_shown_and_a_refused_key_is_asked_for_again(page: Any, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    paste_key(page, stack.make_key("free"))
    expect(page.locator("#runtime option[value=python3]")).to_have_count(1)
    page.locator("#run-form details").first.locator("summary").click()
    page.get_by_label("Wall time (s)").fill("999")  # above the free tier's maximum
    page.get_by_role("button", name=re.compile("^Run")).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("422 validation_error")
    expect(alert).to_contain_text("limits.wall_time_s")

    page.get_by_role("button", name="Forget key").click()
    paste_key(page, "cr_not-a-key")
    page.get_by_label("Wall time (s)").fill("")
    page.get_by_role("button", name=re.compile("^Run")).click()
    expect(alert).to_contain_text("401 unauthorized")
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("localStorage.length") == 0  # the refused key is forgotten


def test_queue_and_usage_tab_shows_numbers(page: Any, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    key = stack.make_key("pro")
    stack.api(key).wait(stack.api(key).submit_ok({"runtime": "bash", "source": "echo hi"}))
    paste_key(page, key)
    page.get_by_role("tab", name="Queue & usage").click()

    rows = page.locator("#queue-rows tr")
    expect(rows).to_have_count(3)
    for tier in ("free", "pro", "enterprise"):
        row = rows.filter(has_text=tier)
        expect(row.locator("td").first).to_have_text(re.compile(r"^\d+$"))  # queued
    expect(rows.filter(has_text="pro (yours)")).to_have_count(1)
    per_minute = page.locator("#usage-rows tr").filter(has_text="per minute").locator("td")
    expect(per_minute.nth(0)).to_have_text("60")  # the pro tier's limit
    expect(per_minute.nth(1)).to_have_text(re.compile(r"^[01]$"))  # the job above (0 if the minute turned since)
    used, remaining = int(per_minute.nth(1).inner_text()), int(per_minute.nth(2).inner_text())
    assert used + remaining == 60
    expect(page.locator("#status-updated")).to_contain_text("Updated")
    page.screenshot(path=str(SCREENSHOTS / "playground-queue.png"), full_page=True)
