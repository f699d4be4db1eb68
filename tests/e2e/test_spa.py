"""End to end in a real browser: frontend-example/ (the SPA) served by `python -m app serve` at /.

Debian's Chromium driven by Playwright for Python (tests/harness/browser.py). The SPA is built
first when `frontend-example/dist` is missing or older than its sources (`npm ci` when
node_modules is missing, then `npm run build`). Two browser windows work on one server: what one
does, the other shows without a reload (subscriptions), and the time-travel slider shows the
company as it was. Screenshots of the main screens land in screenshots/.

Without Chromium, npm or Playwright the test is skipped locally; with CI=true it fails instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.harness.browser import IN_CI, chromium, unavailable
from tests.harness.server import RunningServer, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend-example"
DIST = FRONTEND / "dist"
SCREENSHOTS = REPO / "screenshots"
BUILD_TIMEOUT_SECONDS = 600
DESKTOP = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}


# ---------------------------------------------------------------------------------------------
# Building the SPA


def spa_sources() -> Iterator[Path]:
    """What the build reads: the schema its operation types are generated from, and the SPA's
    own files (not src/gql/, which each build generates)."""
    yield REPO / "schema.graphql"
    for name in ("index.html", "package.json", "package-lock.json", "tsconfig.json"):
        yield FRONTEND / name
    yield FRONTEND / "vite.config.ts"
    yield FRONTEND / "codegen.ts"
    generated = FRONTEND / "src" / "gql"
    for folder in ("src", "public"):
        yield from (p for p in (FRONTEND / folder).rglob("*")
                    if p.is_file() and generated not in p.parents)


def dist_is_stale() -> bool:
    index = DIST / "index.html"
    if not index.is_file():
        return True
    built = index.stat().st_mtime
    return any(p.stat().st_mtime > built for p in spa_sources() if p.exists())


def npm(npm_path: str, *args: str) -> None:
    try:
        done = subprocess.run(
            [npm_path, *args], cwd=FRONTEND, capture_output=True, text=True,
            timeout=BUILD_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`npm {' '.join(args)}` took more than {BUILD_TIMEOUT_SECONDS}s")
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.fail(f"`npm {' '.join(args)}` failed with {done.returncode}:\n{output}")


@pytest.fixture(scope="session")
def spa_dist() -> Path:
    """frontend-example/dist, built now if it is missing or older than the sources."""
    npm_path = shutil.which("npm")
    if npm_path is None and (IN_CI or dist_is_stale()):
        unavailable("npm is not installed (needed to build frontend-example)")
    if not dist_is_stale():
        return DIST
    assert npm_path is not None
    if not (FRONTEND / "node_modules").is_dir():
        npm(npm_path, "ci", "--no-audit", "--no-fund")
    npm(npm_path, "run", "build")
    assert (DIST / "index.html").is_file(), "npm run build produced no dist/index.html"
    return DIST


# ---------------------------------------------------------------------------------------------
# Browser and server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def server(tmp_path: Path, spa_dist: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, extra_env={"SPA_DIR": str(spa_dist)}) as running:
        yield running


def open_page(browser: Browser, url: str, errors: list[str], viewport: Any) -> Page:
    page = browser.new_context(viewport=viewport).new_page()
    page.on("pageerror", lambda error: errors.append(f"{url}: {error}"))
    page.goto(url)
    return page


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # full-page shots draw sticky bars at the scroll offset
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def event_positions(server: RunningServer) -> list[dict[str, Any]]:
    query = "{ events(after: 0, first: 500) { position type streamId data } }"
    response = httpx.post(server.graphql_url, json={"query": query}, timeout=10)
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


# ---------------------------------------------------------------------------------------------
# The test


@pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 180)
def test_two_windows_stay_in_step_and_travel_in_time(
    browser: Browser, server: RunningServer
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    one = open_page(browser, server.base_url + "/", errors, DESKTOP)
    two = open_page(browser, server.base_url + "/", errors, DESKTOP)

    # Both windows are up, live, and show the empty company (and have loaded their event log,
    # which comes after the websocket's change subscriptions were sent).
    for page in (one, two):
        expect(page.locator("#link-state")).to_have_text("Live")
        expect(page.locator("#locations-empty")).to_contain_text("No locations yet")
        expect(page.locator("#event-log-empty")).to_be_visible()
    expect(one.locator("#back-to-now")).to_be_disabled()

    # Window one opens a location; window two shows it without a reload.
    form = one.locator("#create-location")
    form.get_by_label("Street address").fill("1 Main St")
    form.get_by_label("City").fill("Springfield")
    form.get_by_label("State").fill("IL")
    form.get_by_label("Postal code").fill("62701")
    form.get_by_role("button", name="Open location").click()
    expect(one.locator("#create-location-success")).to_contain_text("Springfield")
    expect(one.locator("#location-list")).to_contain_text("Springfield")
    expect(two.locator("#location-list")).to_contain_text("Springfield")
    expect(two.locator("#event-log")).to_contain_text("Location opened")

    # A blank city: the server's ValidationError message appears beside the City field.
    form.get_by_label("Street address").fill("2 Side St")
    form.get_by_label("State").fill("OR")
    form.get_by_label("Postal code").fill("97201")
    form.get_by_role("button", name="Open location").click()
    expect(one.locator("#create-location-city-error")).to_have_text("The City cannot be blank.")
    expect(form.get_by_label("City")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("City")).to_have_attribute(
        "aria-describedby", "create-location-city-error"
    )
    shoot(one, "02-validation-error")

    form.get_by_label("City").fill("Portland")
    expect(one.locator("#create-location-city-error")).to_have_count(0)
    form.get_by_role("button", name="Open location").click()
    expect(one.locator("#location-list > li")).to_have_count(2)
    expect(two.locator("#location-list > li")).to_have_count(2)
    springfield_card = two.locator("#location-list > li", has_text="Springfield")
    portland_card = two.locator("#location-list > li", has_text="Portland")
    expect(portland_card).to_contain_text("0 employees")

    # Window one hires Ana at Springfield; window two's counts follow.
    one.locator("#location-list > li", has_text="Springfield").get_by_role("link").click()
    expect(one.locator("#page-title")).to_have_text("Springfield")
    expect(one.locator("#employees-empty")).to_be_visible()
    hire = one.locator("#hire-employee")
    hire.get_by_label("First name").fill("Ana")
    hire.get_by_label("Last name").fill("Smith")
    hire.get_by_label("Date of birth").fill("1990-05-17")
    hire.get_by_label("Job title").fill("Cook")
    expect(hire.get_by_label("Location")).to_have_value("1")
    hire.get_by_role("button", name="Hire").click()
    expect(one.locator("#hire-employee-success")).to_have_text(
        "Ana Smith was hired at Springfield."
    )
    expect(one.locator("#employee-table")).to_contain_text("Ana Smith")
    expect(springfield_card).to_contain_text("1 employee")
    shoot(one, "03-location")

    # Window one moves her to Portland; both windows show the move.
    one.locator("#employee-table").get_by_role("link", name="Ana Smith").click()
    expect(one.locator("#page-title")).to_have_text("Ana Smith")
    expect(one.locator("#employee-location")).to_have_text("Springfield")
    move = one.locator("#move-employee")
    move.get_by_label("New location").select_option(label="Portland — 2 Side St")
    move.get_by_role("button", name="Move").click()
    expect(one.locator("#move-employee-success")).to_have_text("Moved to Portland.")
    expect(one.locator("#employee-location")).to_have_text("Portland")
    expect(springfield_card).to_contain_text("0 employees")
    expect(portland_card).to_contain_text("1 employee")
    # Other errors are shown plainly: she is already at Portland (a RuleViolationError)...
    move.get_by_role("button", name="Move").click()
    expect(one.locator("#move-employee-error")).to_have_text(
        "This Employee is already assigned to that Location."
    )
    # ...and a blank job title gets its message beside the field.
    one.locator("#change-title").get_by_role("button", name="Change title").click()
    expect(one.locator("#change-title-jobTitle-error")).to_have_text(
        "The Job Title cannot be blank."
    )
    expect(two.locator("#event-log > li")).to_have_count(6)  # 2 openings, hire x2, move x2
    expect(one.locator("#employee-history li")).to_have_count(4)
    shoot(one, "04-employee")
    shoot(two, "01-locations")

    # Time travel, to the end of the hire: Ana was at Springfield then.
    events = event_positions(server)
    types = [e["type"] for e in events]
    assert types == [
        "LocationCreated", "LocationCreated", "EmployeeCreated", "EmployeeAssignedToLocation",
        "EmployeeRemovedFromLocation", "EmployeeAssignedToLocation",
    ], types
    hired_at = events[3]["position"]
    head = events[-1]["position"]
    slider = one.get_by_role("slider", name="Time travel")
    expect(slider).to_have_attribute("max", str(head))
    slider.fill(str(hired_at))
    expect(one.locator("#time-travel-mode")).to_have_text("Past")
    expect(one.locator("#time-travel-position")).to_have_text(f"Position {hired_at} of {head}")
    expect(one.locator("#time-travel-time")).to_contain_text("Assigned to location")
    expect(one.locator("#employee-location")).to_have_text("Springfield")
    expect(one.locator("#employee-history li")).to_have_count(2)
    expect(move.get_by_role("button", name="Move")).to_be_disabled()
    # The move made since is nowhere on the form: no note, and her location then is selected.
    expect(one.locator("#move-employee-success")).to_have_count(0)
    selected = move.locator("select option:checked")
    expect(selected).to_have_text(re.compile(r"^Springfield .*\(current\)$"))
    shoot(one, "05-time-travel-employee")

    # Further back, by keyboard, on the locations screen: before Portland existed.
    one.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="Locations").click()
    expect(one.locator("#page-title")).to_have_text("Locations")
    expect(one.locator("#location-list > li")).to_have_count(2)  # the page has rendered
    # Home is pressed on the slider itself (a re-render may have moved focus), and again if a
    # re-render swallowed it (pressing Home twice changes nothing).
    for _ in range(3):
        slider.press("Home")
        try:
            expect(one.locator("#time-travel-position")).to_have_text(
                f"Position 0 of {head}", timeout=3000
            )
            break
        except AssertionError:
            continue
    expect(one.locator("#time-travel-position")).to_have_text(f"Position 0 of {head}")
    expect(one.locator("#time-travel-time")).to_contain_text("Before the first event")
    expect(one.locator("#locations-empty")).to_contain_text("No locations at this point in time")
    slider.press("ArrowRight")
    expect(one.locator("#time-travel-position")).to_have_text(f"Position 1 of {head}")
    expect(one.locator("#location-list > li")).to_have_count(1)
    expect(one.locator("#location-list")).to_contain_text("Springfield")
    expect(one.locator("#location-list")).not_to_contain_text("Portland")
    expect(one.get_by_role("button", name="Open location")).to_be_disabled()
    shoot(one, "06-time-travel-locations")
    # The other window is not affected: it stays live.
    expect(two.locator("#time-travel-mode")).to_have_text("Now")
    expect(two.locator("#location-list > li")).to_have_count(2)

    # Back to now.
    one.get_by_role("button", name="Back to now").click()
    expect(one.locator("#time-travel-mode")).to_have_text("Now")
    expect(one.locator("#location-list > li")).to_have_count(2)
    expect(one.locator("#location-list > li", has_text="Portland")).to_contain_text("1 employee")
    expect(one.get_by_role("button", name="Open location")).to_be_enabled()

    # The small screen layout.
    phone = open_page(browser, server.base_url + "/", errors, PHONE)
    expect(phone.locator("#location-list > li")).to_have_count(2)
    expect(phone.locator("#event-log > li")).to_have_count(6)
    shoot(phone, "07-phone")

    # Window one terminates Ana (after a confirmation); every window follows.
    one.locator("#location-list > li", has_text="Portland").get_by_role("link").click()
    one.locator("#employee-table").get_by_role("link", name="Ana Smith").click()
    one.get_by_role("button", name="Terminate…").click()
    one.get_by_role("button", name="Yes, terminate").click()
    expect(one.locator("#toast-message")).to_have_text("Ana Smith was terminated.")
    expect(one.locator("#page-title")).to_have_text("Portland")
    expect(one.locator("#employees-empty")).to_be_visible()
    expect(portland_card).to_contain_text("0 employees")
    expect(phone.locator("#event-log > li")).to_have_count(8)

    assert errors == [], errors


def graphql_post(server: RunningServer, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(server.graphql_url, json={"query": query, "variables": variables},
                          timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert not body.get("errors"), body
    return body["data"]


@pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 120)
def test_an_employee_forgotten_from_the_spa_reads_as_erased_in_every_window(
    browser: Browser, server: RunningServer
) -> None:
    from playwright.sync_api import expect

    graphql_post(server, """mutation { createLocation(input: {id: 1, streetAddress: "1 Main St",
        city: "Springfield", state: "IL", postalCode: "62701"}) { __typename } }""")
    graphql_post(server, """mutation { createEmployee(input: {id: 1, firstName: "Zoe",
        lastName: "Quartermaine", dateOfBirth: "1931-07-13", jobTitle: "Cook", locationId: 1})
        { __typename } }""")
    errors: list[str] = []
    one = open_page(browser, server.base_url + "/#/employees/1", errors, DESKTOP)
    two = open_page(browser, server.base_url + "/#/locations/1", errors, DESKTOP)
    expect(one.locator("#page-title")).to_have_text("Zoe Quartermaine")
    expect(two.locator("#employee-table")).to_contain_text("Zoe Quartermaine")

    one.get_by_role("button", name="Forget…").click()
    one.get_by_role("button", name="Yes, erase").click()

    expect(one.locator("#toast-message")).to_have_text(
        "The personal data of employee #1 was erased.")
    expect(one.locator("#page-title")).to_have_text("Employee #1 (erased)")
    expect(one.locator("#employee-born")).to_have_text("erased")
    expect(one.locator("#employee-erased")).to_be_visible()
    expect(one.locator("#forget-card")).to_have_count(0)
    expect(one.locator("#employee-history")).to_contain_text("Personal data erased")
    expect(two.locator("#employee-table")).to_contain_text("Employee #1 (erased)")
    shoot(one, "08-erased-employee")
    for page in (one, two):
        assert "Quartermaine" not in page.content()
    assert errors == [], errors
