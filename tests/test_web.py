"""The /web playground and /docs in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Dialog, Page

from tests.conftest import InProcessServer, ServerFactory, SharedServers, chromium, console_script, free_port

pytestmark = pytest.mark.browser

HOSTILE_MESSAGE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def web_server(shared_server: SharedServers) -> InProcessServer:
    return shared_server(env={"ENABLE_WEB_INTERFACE": "true"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for this module's tests, every one of which is in a browser (conftest's is for one test)."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.context.close()


def test_playground_resets_steps_and_shows_the_echo_as_text(
    page: Page, web_server: InProcessServer, artifacts: Path
) -> None:
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.goto(f"{web_server.url}/web/", wait_until="domcontentloaded")

    page.get_by_role("button", name="Reset").click()
    page.get_by_text("new episode").wait_for(timeout=30_000)
    page.get_by_role("textbox").fill(HOSTILE_MESSAGE)
    page.get_by_role("button", name="Run step").click()
    page.get_by_text("reward 2.8").wait_for(timeout=30_000)

    shown = page.locator("body").inner_text()
    assert f"echoed_message\n{HOSTILE_MESSAGE}\n" in shown
    assert "message_length\n28\n" in shown
    assert "reward\n2.8\n" in shown
    assert page.locator('img[src="x"]').count() == 0  # shown as text, never parsed as HTML
    page.wait_for_timeout(500)
    assert dialogs == []

    page.screenshot(path=str(artifacts / "web.png"), full_page=True)


def test_web_under_plain_uvicorn_shows_the_description(page: Page, server_factory: ServerFactory) -> None:
    """`uvicorn server.app:app --reload` (Running Locally) shows the README, not OpenEnv's placeholder."""
    port = free_port()
    command = [console_script("uvicorn"), "server.app:app", "--reload", "--host", "127.0.0.1", "--port", str(port)]
    server = server_factory(command=command, env={"ENABLE_WEB_INTERFACE": "true"}, port=port)
    page.goto(f"{server.url}/web/", wait_until="domcontentloaded")
    page.get_by_text("Echoes each message back; the reward is its length × 0.1.").first.wait_for(timeout=30_000)
    assert "RoomsEnvironment environment" not in page.locator("body").inner_text()


def test_swagger_ui_loads(page: Page, web_server: InProcessServer) -> None:
    page.goto(f"{web_server.url}/docs", wait_until="domcontentloaded")
    page.get_by_text("/step").first.wait_for(timeout=30_000)
    body = page.locator("body").inner_text()
    for path in ("/reset", "/step", "/state", "/health", "/schema", "/metadata"):
        assert path in body


def test_two_visitors_play_episodes_of_their_own_and_see_only_their_own_log(
    browser: Browser, web_server: InProcessServer
) -> None:
    visitors = [browser.new_context().new_page() for _ in range(2)]
    for page in visitors:
        page.goto(f"{web_server.url}/web/", wait_until="domcontentloaded")
        page.get_by_text("Connected: your own session.").wait_for(timeout=30_000)
    first, second = visitors
    for message in ("alpha", "beta"):
        first.get_by_role("textbox").fill(message)
        first.get_by_role("button", name="Run step").click()
        first.get_by_text(f"reward {len(message) / 10}").wait_for(timeout=30_000)
    second.get_by_role("textbox").fill("gamma!")
    second.get_by_role("button", name="Run step").click()
    second.get_by_text("reward 0.6").wait_for(timeout=30_000)
    second.get_by_role("button", name="State").click()
    second.get_by_text('"step_count":1').wait_for(timeout=30_000)  # its own episode: one step

    assert "alpha" not in second.locator("#log").inner_text()
    assert "gamma!" not in first.locator("#log").inner_text()
    assert requests.get(f"{web_server.url}/capacity", timeout=10).json()["by_door"]["ws"] == 2
