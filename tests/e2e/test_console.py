"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

The lifecycle scenario runs against a real server with the process backend, so
"open the notebook" loads a real JupyterLab. The other tests use the fake
backend and check what needs no Jupyter: validation errors, the create form's
catalog filtering, auto-stop editing, queue rank, sign-out.

Screenshots go to the test's temporary directory unless
``DEMANAGER_SCREENSHOTS_DIR`` names a folder; ``docs/images`` regenerates the
pictures of ``docs/console.md``. (Writing them into the tree on every run would
leave a dirty checkout behind each test run.)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.server import ServerProcess, processes_of, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# Everything that would make Chromium talk to anything but 127.0.0.1 is off.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
CPU_PROFILE = "Multi-Engine 1.0 (python3)-cpu"
GPU_PROFILE = "Multi-Engine 1.0 (python3)-gpu"

Shoot = Callable[[Page, str], None]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package to run browser tests")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors catch what throws nowhere, such as a Content-Security-Policy refusal;
    # the browser's own line for each non-2xx API answer is expected.
    page.on("console", lambda message: errors.append(message.text) if message.type == "error"
            and not message.text.startswith("Failed to load resource") else None)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"errors in the console page: {errors}"


@pytest.fixture
def shoot(tmp_path: Path) -> Shoot:
    folder = Path(os.environ.get("DEMANAGER_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        # Finished transitions: the toast is shown at full opacity, not mid-fade.
        page.screenshot(path=folder / f"console-{name}.png", animations="disabled")

    return take


def sign_in(page: Page, server: ServerProcess, token: str | None = None) -> None:
    page.goto(f"{server.url}/console")
    page.get_by_label("Token").fill(token or server.token)
    page.get_by_label("Project ID").fill(server.project)
    page.get_by_role("button", name="Sign in").click()


def row(page: Page, name: str) -> Locator:
    """The table row of the instance called ``name``."""
    name_cell = page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$"))
    return page.locator("#instance-rows tr", has=name_cell)


# --- the whole life cycle with a real JupyterLab -------------------------------------------


def running(api: httpx.Client, name: str, *, stop: bool = False, **spec: object) -> str:
    """An instance created through the API and RUNNING (``stop``: then STOPPED)."""
    created = api.post("", json={
        "name": name, "profile_id": CPU_PROFILE, "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}, **spec},
    }).json()
    wait_for_status(api, created["id"], "RUNNING")
    if stop:
        api.post(f"/{created['id']}/action", json={"action": "stop"})
        wait_for_status(api, created["id"], "STOPPED")
    return str(created["id"])


def test_lifecycle_with_a_real_jupyterlab(
    server_factory: Callable[..., ServerProcess], page: Page, shoot: Shoot
) -> None:
    server = server_factory(backend="process")

    page.goto(f"{server.url}/console/")
    page.get_by_label("Token").fill(server.token)
    page.get_by_label("Project ID").fill(server.project)
    shoot(page, "sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Notebook instances")).to_be_visible()
    expect(page.locator("#empty-state")).to_be_visible()
    # A reload would drop this marker: the list must go live without one.
    page.evaluate("window.__sameDocument = true")

    page.get_by_role("button", name="New instance").click()
    dialog = page.get_by_role("dialog", name="New instance")
    dialog.get_by_label("Name").fill("analysis")
    dialog.get_by_label("Description").fill("Exploring the sales figures")
    dialog.get_by_label("Environment").select_option(CPU_PROFILE)
    dialog.get_by_label("Volume size (GB)").fill("10")
    expect(dialog.get_by_label("Flavor")).to_have_value("modelarts.vm.cpu.2u")
    shoot(page, "create")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()

    analysis = row(page, "analysis")
    expect(analysis).to_have_attribute("data-status", re.compile("CREATING|RUNNING"))
    shoot(page, "list")
    expect(analysis).to_have_attribute("data-status", "RUNNING", timeout=120_000)
    instance_id = analysis.get_attribute("data-id")
    assert instance_id and instance_id.startswith("DE-")
    assert page.evaluate("window.__sameDocument") is True
    expect(analysis.locator(".cell-storage")).to_have_text("EVS 10 GB")
    expect(page.locator("#announcer")).to_contain_text("analysis: Running")

    # The auto-stop countdown is armed (1 h by default in the form) and ticks each second.
    countdown = analysis.locator(".auto-stop-text")
    expect(countdown).to_have_text(re.compile(r"^0:59:\d\d left$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=3_000)
    shoot(page, "running")

    link = analysis.get_by_role("link", name="Open JupyterLab of analysis (opens a new tab)")
    expect(link).to_have_attribute("target", "_blank")
    with page.context.expect_page() as opened:
        link.click()
    lab = opened.value
    lab.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
    expect(lab).to_have_title(re.compile("JupyterLab"), timeout=30_000)
    expect(lab.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
    assert f"/notebooks/{instance_id}/" in lab.url
    # JupyterLab's own "notify me about Jupyter news?" toast is not ours to show.
    lab.add_style_tag(content=".Toastify { display: none !important; }")
    shoot(lab, "jupyterlab")
    lab.close()
    page.bring_to_front()

    analysis.get_by_role("button", name="Stop analysis").click()
    confirm = page.get_by_role("dialog", name="Stop analysis?")
    expect(confirm).to_be_visible()
    shoot(page, "confirm-stop")
    confirm.get_by_role("button", name="Stop", exact=True).click()
    expect(analysis).to_have_attribute("data-status", "STOPPED", timeout=60_000)
    expect(analysis.get_by_role("link")).to_be_hidden()
    expect(analysis.locator(".auto-stop-text")).to_have_text("after 1 h")
    assert processes_of(instance_id) == []
    shoot(page, "stopped")

    analysis.get_by_role("button", name="Delete analysis").click()
    confirm = page.get_by_role("dialog", name="Delete analysis?")
    confirm.get_by_role("button", name="Delete", exact=True).click()
    expect(analysis).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#announcer")).to_contain_text("analysis deleted")
    assert page.evaluate("window.__sameDocument") is True
    with server.client() as api:
        assert api.get(f"/{instance_id}").json()["error_code"] == "ModelArts.6309"


# --- the rest, on the fake backend -----------------------------------------------------------


def test_form_shows_api_validation_errors_and_fitting_flavors(
    server_factory: Callable[..., ServerProcess], page: Page, shoot: Shoot
) -> None:
    server = server_factory()
    with server.client() as api:
        api.post("", json={"name": "taken", "profile_id": CPU_PROFILE,
                           "flavor": "modelarts.vm.cpu.2u", "spec": {"storage": {"type": "evs"}}})

    sign_in(page, server, token="dmo_not-a-token")
    error = page.locator("#sign-in-error")
    expect(error).to_contain_text("ModelArts.6620")
    expect(page.get_by_label("Token")).to_be_focused()
    page.get_by_label("Token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(row(page, "taken")).to_have_attribute("data-status", "RUNNING")

    # Keyboard only: the button is reachable and Enter opens the form.
    page.get_by_role("button", name="New instance").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="New instance")
    expect(dialog.get_by_label("Name")).to_be_focused()

    flavors = dialog.get_by_label("Flavor")
    dialog.get_by_label("Environment").select_option(GPU_PROFILE)
    gpu_options = flavors.locator("option").all_inner_texts()
    assert gpu_options and all("gpu" in text for text in gpu_options), gpu_options
    dialog.get_by_label("Environment").select_option(CPU_PROFILE)
    cpu_options = flavors.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert "modelarts.vm.cpu.2u" in cpu_options
    assert not any("gpu" in name for name in cpu_options)

    dialog.get_by_label("Name").fill("taken")
    dialog.get_by_role("button", name="Create").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("ModelArts.6301")
    expect(alert).to_contain_text("already exists")
    expect(dialog.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    shoot(page, "create-error")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    with server.client() as api:
        assert api.get("", params={"de_type": "Notebook"}).json()["total_count"] == 1


def test_auto_stop_is_shown_and_edited(
    server_factory: Callable[..., ServerProcess], page: Page
) -> None:
    server = server_factory()
    with server.client() as api:
        timed_id = running(api, "timed", auto_stop={"enable": True, "duration": 7200})

        sign_in(page, server)
        timed = row(page, "timed")
        countdown = timed.locator(".auto-stop-text")
        expect(countdown).to_have_text(re.compile(r"^1:59:\d\d left$"))
        first = countdown.inner_text()
        expect(countdown).not_to_have_text(first, timeout=3_000)

        timed.get_by_role("button", name="Edit auto-stop of timed").click()
        dialog = page.get_by_role("dialog", name="Auto-stop of timed")
        expect(dialog.get_by_label("Stop automatically")).to_be_checked()
        expect(dialog.get_by_label("Stop after")).to_have_value("2")
        dialog.get_by_label("Stop automatically").uncheck()
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()
        expect(countdown).to_have_text("Off")
        assert api.get(f"/{timed_id}").json()["spec"]["auto_stop"]["enable"] is False

        timed.get_by_role("button", name="Edit auto-stop of timed").click()
        dialog.get_by_label("Stop automatically").check()
        dialog.get_by_label("Stop after").fill("3")
        dialog.get_by_role("button", name="Save").click()
        # Turned on while running: the contract arms it at the next start.
        expect(countdown).to_have_text("after 3 h (from next start)")
        stored = api.get(f"/{timed_id}").json()["spec"]["auto_stop"]
        assert stored["enable"] is True and stored["duration"] == 3 * 3600

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_start_asks_first_then_starts(
    server_factory: Callable[..., ServerProcess], page: Page
) -> None:
    server = server_factory()
    with server.client() as api:
        resting_id = running(api, "resting", stop=True)

        sign_in(page, server)
        resting = row(page, "resting")
        expect(resting).to_have_attribute("data-status", "STOPPED")
        resting.get_by_role("button", name="Start resting").click()
        confirm = page.get_by_role("dialog", name="Start resting?")
        expect(confirm).to_be_visible()
        confirm.get_by_role("button", name="Cancel").click()
        expect(confirm).to_be_hidden()
        assert api.get(f"/{resting_id}").json()["status"] == "STOPPED", "cancel changes nothing"

        resting.get_by_role("button", name="Start resting").click()
        confirm.get_by_role("button", name="Start", exact=True).click()
        expect(resting).to_have_attribute("data-status", "RUNNING", timeout=30_000)


def test_queue_rank_is_shown(
    server_factory: Callable[..., ServerProcess], page: Page, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "profiles:\n"
        f"  - id: \"{CPU_PROFILE}\"\n"
        "    flavor_type: CPU\n"
        # never run: the fake backend starts nothing
        "    launch: {process: {command: [\"true\"]}}\n"
        "flavors:\n"
        "  - name: modelarts.vm.cpu.free\n"
        "    type: CPU\n"
        "    promo_type: Free\n"
        "    params: {CPU: 1, GPU: 0, memory: 4GiB}\n"
        "    capacity: 1\n"
        "    duration: 3600\n",
        encoding="utf-8",
    )
    server = server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog)})
    body = {"profile_id": CPU_PROFILE, "flavor": "modelarts.vm.cpu.free",
            "spec": {"storage": {"type": "evs"}}}
    with server.client() as api:
        # Two stopped instances, then one that takes the only slot: starting the
        # first two queues them, in order.
        queued = []
        for name in ("second", "third"):
            instance_id = api.post("", json={**body, "name": name}).json()["id"]
            wait_for_status(api, instance_id, "RUNNING")
            api.post(f"/{instance_id}/action", json={"action": "stop"})
            wait_for_status(api, instance_id, "STOPPED")
            queued.append(instance_id)
        holder = api.post("", json={**body, "name": "holder"}).json()
        wait_for_status(api, holder["id"], "RUNNING")
        for instance_id in queued:
            answer = api.post(f"/{instance_id}/action", json={"action": "start"}).json()
            assert answer["current_status"] == "START_QUEUING", answer

    page.route("**/demanager/instances?*", _with_queuing_info)
    sign_in(page, server)
    expect(row(page, "second")).to_have_attribute("data-status", "START_QUEUING")
    expect(row(page, "second").locator(".badge")).to_have_text("Queued")
    expect(row(page, "second").locator(".status-detail")).to_contain_text("#1 in queue")
    expect(row(page, "third").locator(".status-detail")).to_contain_text("#2 in queue")
    expect(row(page, "third").get_by_role("button", name="Leave queue third")).to_be_visible()


def _with_queuing_info(route: Route) -> None:
    """Pass the list through, adding contract-shaped ``queuing_info`` (§3.16) where a
    queued instance lacks it: the server does not emit it yet, and the console's
    rendering of the rank is what this test is about."""
    response = route.fetch()
    body = response.json()
    queued = [i for i in body.get("instances", []) if i["status"].endswith("_QUEUING")]
    for rank, instance in enumerate(sorted(queued, key=lambda i: i["latest_update_timestamp"]), 1):
        instance.setdefault("queuing_info", {
            "id": instance["id"], "name": instance["name"], "de_type": "Notebook",
            "flavor": instance["flavor"], "flavor_details": instance["flavor_details"],
            "status": instance["status"], "rank": rank, "remain_time": 600 * rank,
            "begin_timestamp": int(instance["latest_update_timestamp"]), "end_timestamp": 0,
        })
    route.fulfill(response=response, json=body)


# --- the timeline: an instance's events, live ------------------------------------------------


def test_timeline_shows_the_events_of_a_start_as_they_arrive(
    server_factory: Callable[..., ServerProcess], page: Page, shoot: Shoot
) -> None:
    # A notebook that takes a second to answer: "launched" and "ready" arrive apart.
    server = server_factory(env={"DEMANAGER_FAKE__START_DELAY_SECONDS": "1"})
    with server.client() as api:
        watched_id = running(api, "watched", stop=True)

    sign_in(page, server)
    watched = row(page, "watched")
    expect(watched).to_have_attribute("data-status", "STOPPED")
    watched.get_by_role("button", name="Timeline of watched").click()
    panel = page.get_by_role("dialog", name="Timeline of watched")
    expect(panel).to_be_visible()
    events = panel.locator("#timeline-list li")
    past = ["created", "launched", "ready", "stop_requested", "stopped"]
    expect(events).to_have_count(len(past))
    assert [e.get_attribute("data-kind") for e in events.all()] == past
    expect(events.first.locator(".timeline-kind")).to_have_text("Created")
    expect(events.first.locator(".timeline-message")).to_have_text(
        "Created by user admin with flavor modelarts.vm.cpu.2u."
    )
    expect(panel.locator("#timeline-state")).to_have_text("Live")
    # A reload would drop this marker: the new events must come without one.
    page.evaluate("window.__sameDocument = true")

    # The panel is not modal: start the instance from its row while it stays open.
    watched.get_by_role("button", name="Start watched").click()
    page.get_by_role("dialog", name="Start watched?").get_by_role(
        "button", name="Start", exact=True
    ).click()

    start_requested = panel.locator("#timeline-list li[data-kind='start_requested']")
    expect(start_requested.locator(".timeline-message")).to_have_text(
        "Start requested by user admin."
    )
    ready = panel.locator("#timeline-list li[data-kind='ready']").nth(1)
    expect(ready.locator(".timeline-message")).to_have_text(
        re.compile(r"^Ready: the notebook server answered \d+\.\d s after the request\.$")
    )
    expect(events).to_have_count(len(past) + 3)
    assert [e.get_attribute("data-kind") for e in events.all()][len(past):] == [
        "start_requested", "launched", "ready",
    ]
    ids = [int(e.get_attribute("data-id") or 0) for e in events.all()]
    assert ids == sorted(set(ids)), "each event once, in order"
    expect(watched).to_have_attribute("data-status", "RUNNING")
    assert page.evaluate("window.__sameDocument") is True
    shoot(page, "timeline")

    # Closing the panel ends its stream (the browser aborts the request), and opening
    # it again shows what happened meanwhile.
    with page.expect_event(
        "requestfailed", predicate=lambda request: request.url.endswith("/events/stream")
    ) as aborted:
        panel.get_by_role("button", name="Close").click()
    assert aborted.value.failure is not None
    expect(panel).to_be_hidden()
    expect(watched.get_by_role("button", name="Timeline of watched")).to_be_focused()
    with server.client() as api:
        api.post(f"/{watched_id}/action", json={"action": "stop"})
        wait_for_status(api, watched_id, "STOPPED")
    watched.get_by_role("button", name="Timeline of watched").click()
    expect(events).to_have_count(len(past) + 5)
    expect(events.last).to_have_attribute("data-kind", "stopped")


def test_timeline_shows_hostile_text_as_text_and_resumes_a_dropped_stream(
    server_factory: Callable[..., ServerProcess], page: Page
) -> None:
    server = server_factory()
    with server.client() as api:
        guarded_id = running(api, "guarded")

    hostile = '<img src=x onerror="window.__owned = true">Launched'
    stream_requests: list[dict[str, str]] = []

    def event(number: int, kind: str, message: str) -> str:
        body = {"id": number, "instance_id": guarded_id, "at": 1_700_000_000_000 + number,
                "kind": kind, "actor": "engine", "message": message, "detail": {}}
        return f"id: {number}\r\ndata: {json.dumps(body)}\r\n\r\n"

    def stream(route: Route) -> None:
        # Each answer ends at once, as a stream a proxy cut would: the console reconnects.
        stream_requests.append(route.request.headers)
        if len(stream_requests) == 1:
            body = "retry: 50\n: open\n\n" + event(900, "launched", hostile)
        elif len(stream_requests) == 2:
            body = event(901, "extended", "Auto-stop extended by one hour.")
        else:
            body = ": keep-alive\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/events/stream", stream)
    sign_in(page, server)
    row(page, "guarded").get_by_role("button", name="Timeline of guarded").click()
    panel = page.get_by_role("dialog", name="Timeline of guarded")
    events = panel.locator("#timeline-list li")
    expect(events).to_have_count(5)  # created, launched, ready, then the two streamed
    expect(events.nth(3).locator(".timeline-message")).to_have_text(hostile)
    assert panel.locator("img").count() == 0
    assert page.evaluate("window.__owned") is None
    # A kind this console has no label for reads as its own name.
    expect(events.nth(4).locator(".timeline-kind")).to_have_text("Extended")
    assert stream_requests[1]["last-event-id"] == "900"
    assert stream_requests[0]["x-auth-token"] == server.token
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(row(page, "guarded").get_by_role("button", name="Timeline of guarded")).to_be_focused()

    # The parser itself: a CRLF and a message split across chunks.
    parsed = page.evaluate("""async () => {
        const { SSEParser } = await import("/console/static/timeline.js");
        const found = [];
        const parser = new SSEParser((message) => found.push(message));
        for (const chunk of ["id: 1\\r", "\\ndata: a\\r\\nda", "ta: b\\r\\n", "\\r\\n: x\\n\\n"]) {
            parser.push(chunk);
        }
        return found;
    }""")
    assert parsed == [{"id": "1", "event": "message", "data": "a\nb"}]
