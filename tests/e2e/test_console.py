"""The web console in a real browser (headless Debian Chromium through Selenium) against the real
system, started as `serialtrack up` starts it, with `serialtrack demo` loaded. One system and one
browser serve the module. Each page's screenshot is saved to $SERIALTRACK_SCREENSHOTS (default: a temporary folder; docs/console/ keeps the current ones, which the README shows).

Without Chromium and its driver these tests skip, except in CI (.ci/run installs them and sets
SERIALTRACK_CI, and tests/support/skip_policy.py turns a skip into a failure)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from serialtrack.publishing import build_envelope
from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from tests.e2e.test_cli import System, cli, cli_env, redis_as

# The first test also pays for starting the system and the demo (a minute or more on a busy machine).
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Each run saves every page's screenshot; docs/console/ keeps the current ones, refreshed on purpose
# (`SERIALTRACK_SCREENSHOTS=docs/console make test`), so a plain test run leaves the tree clean.
SCREENSHOTS = Path(os.environ.get("SERIALTRACK_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / "serialtrack-console-screenshots").resolve()
ALERT_LATENCY_CLAIM_S = 2.0  # README: an alert reaches the theft desk within 2 s of the sale


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    ports = {"redis": free_port(), "console": free_port(), **{s: free_port() for s in INSTALLED}}
    env = cli_env(tmp_path_factory.mktemp("console") / "data", ports)
    env["SERIALTRACK_CONSOLE_PORT"] = str(ports["console"])
    running = System(env)
    running.start()
    running.url = f"http://127.0.0.1:{ports['console']}"
    running.link = re.search(r"(http://\S+/signin\?code=\S+)\)", running.output).group(1)
    running.demo = json.loads(cli(env, "demo", "--json").stdout)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1180,900"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.implicitly_wait(0)
    driver.downloads = downloads
    yield driver
    driver.quit()


def service_urls(system) -> dict[str, str]:
    """The module's services, for a console made in process."""
    return {name: f"http://127.0.0.1:{system.env[f'{name.upper()}_PORT']}" for name in INSTALLED}


def wait_until(check, message: str, timeout: float = 20.0, interval: float = 0.1, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}\n{detail()}")


def text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "main").text


def screenshot(driver, name: str) -> None:
    """The whole page at a tablet's width (1180 CSS px), as tall as it is (at most 2400 px)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1180, "height": min(max(height, 700), 2400), "deviceScaleFactor": 1, "mobile": False})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.fixture(scope="module")
def admin(system, browser):
    """The browser, signed in as admin with a new link (`serialtrack console --link`: the one
    `serialtrack up` printed is for the first test, and works once)."""
    link = cli(system.env, "console", "--link").stdout.strip()
    assert link.startswith(system.url + "/signin?code=")
    browser.get(link)
    assert browser.current_url == system.url + "/"
    return browser


def test_the_printed_link_signs_in_once_and_the_session_cookie_is_httponly_and_strict(system, browser):
    from selenium.webdriver.common.by import By

    browser.get(system.url + "/")
    assert browser.current_url.startswith(system.url + "/signin")  # no session yet
    screenshot(browser, "signin")
    browser.get(system.link)
    assert browser.current_url == system.url + "/"
    assert "admin" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    [cookie] = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not re.search(r"st_[0-9a-f]{16}_", cookie["value"])  # a session id, never the token
    # The link works once: a second use (another browser, no cookie) is refused.
    again = httpx.get(system.link, follow_redirects=False)
    assert again.status_code == 200 and "used already or has expired" in again.text


def test_lookup_tells_the_units_story_sale_claim_decision_and_recall_status(system, admin):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    serial = system.demo["serials"][4]  # sold, claimed ("no sound": approved), under the demo's recall
    admin.get(system.url + "/")
    box = admin.find_element(By.ID, "q")
    assert admin.switch_to.active_element == box  # the cursor waits in the box: type, then Enter
    box.send_keys(serial, Keys.ENTER)  # the serial alone: the console finds its manufacturer
    wait_until(lambda: admin.current_url.endswith(f"/unit/acme/{serial}"), "the unit page")
    story = text(admin)
    timeline = admin.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "Sold at store-12" in timeline and "till store-12/till-1" in timeline
    recall_id = system.demo["recall"]["recall_id"]
    claim = next(line for line in timeline.splitlines() if "Warranty claim" in line)
    assert "approved" in claim
    assert f"Recall {recall_id}: owner notified" in timeline
    recall_row = admin.find_element(By.CSS_SELECTOR, "#recalls-h + table tbody tr").text
    assert recall_id in recall_row and "sold owner notified" in recall_row
    assert admin.find_elements(By.CSS_SELECTOR, "svg.coverage line.today")  # coverage bar, today marked
    assert "under open recall" in story
    screenshot(admin, "unit")


def test_an_unknown_serial_says_so_and_offers_near_misses(system, admin):
    from selenium.webdriver.common.by import By

    serial = system.demo["serials"][0]
    typo = serial[:-1] + "X"  # the last character mistyped
    admin.get(f"{system.url}/?q=acme+{typo}")
    page = text(admin)
    assert f"acme/{typo} is not known" in page and "Did you mean" in page
    offered = [a.text for a in admin.find_elements(By.CSS_SELECTOR, "ul.near a")]
    assert f"acme/{serial}" in offered
    screenshot(admin, "lookup-near-misses")


def test_the_theft_desk_shows_a_stolen_units_sale_live_without_a_reload(system, admin):
    from selenium.webdriver.common.by import By

    stolen = system.demo["serials"][2]  # reported stolen by metro-pd in the demo
    admin.get(system.url + "/theft")
    wait_until(lambda: admin.find_element(By.ID, "live-status").get_attribute("data-state") == "live",
               "the live alert stream")
    before = {row.get_attribute("data-alert-id") for row in admin.find_elements(By.CSS_SELECTOR, "#alerts tr")}
    # The page records when each row arrives and that it was never reloaded.
    admin.execute_script("""
        window.notReloaded = true; window.arrivals = {};
        new MutationObserver((changes) => changes.forEach((c) => c.addedNodes.forEach((n) => {
            if (n.dataset) window.arrivals[n.dataset.alertId] = Date.now(); })))
          .observe(document.getElementById('alerts'), {childList: true});""")
    envelope = build_envelope("unit.sold", {"manufacturer": "acme", "serial": stolen, "sku": "TV-55-OLED",
                                            "location": "store-7", "terminal_id": "store-7/till-4",
                                            "receipt_id": "R-LIVE-1"}, source="pos/store-7/till-4")
    published_at = admin.execute_script("return Date.now()")
    redis_as(system.env, "operator").xadd("serialtrack:unit.sold",
                                          {"event": envelope.model_dump_json(exclude_none=True)})
    row = wait_until(lambda: [r for r in admin.find_elements(By.CSS_SELECTOR, "#alerts tr")
                              if r.get_attribute("data-alert-id") not in before], "the alert on the page", timeout=30)
    assert admin.execute_script("return window.notReloaded") is True
    assert "store-7" in row[0].text and stolen in row[0].text and "metro-pd" in row[0].text
    arrived_at = admin.execute_script("return window.arrivals[arguments[0]]", row[0].get_attribute("data-alert-id"))
    assert (arrived_at - published_at) / 1000 <= ALERT_LATENCY_CLAIM_S, f"{arrived_at - published_at} ms"
    screenshot(admin, "theft-desk")

    row[0].find_element(By.PARTIAL_LINK_TEXT, "metro-pd:").click()  # the case view
    wait_until(lambda: "/theft/case/metro-pd/" in admin.current_url, "the case page")
    assert "store-7" in text(admin)
    screenshot(admin, "theft-case")


def test_a_recall_report_downloads_from_the_campaign_page(system, admin):
    from selenium.webdriver.common.by import By

    recall_id = system.demo["recall"]["recall_id"]
    admin.get(system.url + "/recalls")
    admin.find_element(By.LINK_TEXT, recall_id).click()
    wait_until(lambda: admin.current_url.endswith(f"/recalls/{recall_id}"), "the campaign page")
    assert admin.find_elements(By.CSS_SELECTOR, "svg.progress-chart path.reach")
    assert "affected\n7" in text(admin)
    screenshot(admin, "recall-campaign")
    admin.find_element(By.PARTIAL_LINK_TEXT, "Download report (CSV)").click()
    report = wait_until(lambda: [p for p in admin.downloads.glob("*.csv")], "the downloaded report")[0]
    rows = wait_until(lambda: report.read_text().splitlines() if report.stat().st_size else None, "the report's rows")
    assert rows[0].startswith("recall_id,manufacturer,serial")
    assert sorted(r.split(",")[2] for r in rows[1:]) == sorted(system.demo["serials"])


def test_every_page_of_the_admin_renders_and_is_saved(system, admin):
    from selenium.webdriver.common.by import By

    customer = system.demo["units"][system.demo["serials"][4]]["warranty"]["owner"]["customer_id"]
    pages = {"lookup": "/", "customer": f"/customer?id={customer}", "recalls": "/recalls", "stock": "/stock",
             "claims": "/claims", "system": "/system"}
    for name, path in pages.items():
        admin.get(system.url + path)
        assert admin.find_element(By.TAG_NAME, "h1").text, name
        assert not admin.find_elements(By.CSS_SELECTOR, ".banner.down"), (name, text(admin))
        screenshot(admin, name)
    admin.get(f"{system.url}/customer?id={customer}")
    assert system.demo["serials"][4] in text(admin) and "system" in admin.find_element(By.TAG_NAME, "nav").text.lower()


def test_a_manufacturer_scoped_user_cannot_see_another_manufacturers_unit(system, browser):
    from selenium.webdriver.common.by import By

    made = json.loads(cli(system.env, "tokens", "create", "--role", "manufacturer", "--manufacturer", "globex",
                          "--name", "globex-recalls", "--json").stdout)
    browser.delete_all_cookies()
    browser.get(system.url + "/signin")
    browser.find_element(By.ID, "token").send_keys(made["token"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/signin'] button").click()
    wait_until(lambda: browser.current_url == system.url + "/", "signed in as globex",
               detail=lambda: browser.current_url + "\n" + browser.page_source[:1500])
    nav = browser.find_element(By.TAG_NAME, "nav").text
    assert "Recalls" in nav and "Theft desk" not in nav and "Customer" not in nav and "System" not in nav

    serial = system.demo["serials"][4]  # acme's
    browser.get(f"{system.url}/unit/acme/{serial}")
    page = text(browser)
    assert f"acme/{serial} is not known" in page and "store-12" not in page and "Timeline" not in page
    browser.get(f"{system.url}/?q={serial}")
    assert f"No unit has the serial {serial}" in text(browser)
    browser.get(f"{system.url}/recalls/{system.demo['recall']['recall_id']}")
    assert "No such recall" in text(browser)
    browser.get(system.url + "/theft")
    assert "Not for your role" in text(browser)


async def test_a_service_that_is_down_is_named_and_the_rest_of_the_story_still_shows(system):
    """A console whose theft service does not answer (its address points at a closed port), in
    process, over the module's real services."""
    from serialtrack.console.app import create_app
    from shared.settings import Settings

    settings = Settings(data_dir=Path(system.env["SERIALTRACK_DATA_DIR"]))
    closed = f"http://127.0.0.1:{free_port()}"
    token = (Path(system.env["SERIALTRACK_DATA_DIR"]) / "credentials" / "admin.token").read_text().strip()
    transport = httpx.ASGITransport(app=create_app(settings, {**service_urls(system), "theft": closed}))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as console:
        assert (await console.post("/signin", content=f"token={token}",
                                   headers={"content-type": "application/x-www-form-urlencoded"})).status_code == 303
        serial = system.demo["serials"][4]
        page = (await console.get(f"/unit/acme/{serial}")).text
        assert f"The theft service does not answer</strong> ({closed})" in page
        assert "theft reports and alerts, the theft desk" in page  # what is missing until it is back
        assert "Sold at store-12" in page and "sold owner notified" in page  # what the others still tell
        desk_response = await console.get("/theft")
        desk, desk_headers = desk_response.text, desk_response.headers
        assert "The theft service does not answer" in desk
        assert (await console.get("/theft/export/alerts.csv")).status_code == 503
        forged = await console.post("/signin", content=f"token={token}", headers={
            "content-type": "application/x-www-form-urlencoded", "origin": "http://elsewhere.example"})
        assert forged.status_code == 403  # another site's form cannot sign a browser in (or out)
        assert "default-src 'self'" in desk_headers["content-security-policy"]  # nothing from a CDN
        refused = await console.post("/signin", content="token=st_0123456789abcdef_" + "A" * 43,
                                     headers={"content-type": "application/x-www-form-urlencoded"})
        assert refused.status_code == 401 and "does not work" in refused.text


async def test_a_token_revoked_while_signed_in_ends_the_session(system):
    from serialtrack.console.app import create_app
    from shared.settings import Settings
    from shared.tokens import create_token, revoke_token

    settings = Settings(data_dir=Path(system.env["SERIALTRACK_DATA_DIR"]))
    token, _ = create_token(settings.tokens_dir, "store", name="store-desk-9")
    form = {"content-type": "application/x-www-form-urlencoded"}
    transport = httpx.ASGITransport(app=create_app(settings, service_urls(system)))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as console:
        assert (await console.post("/signin", content=f"token={token}", headers=form)).status_code == 303
        assert (await console.get("/stock")).status_code == 200
        session_id = console.cookies["serialtrack_session"]
        revoke_token(settings.tokens_dir, "store-desk-9")
        deadline = time.monotonic() + 15  # services see a revocation within seconds
        while (answer := await console.get("/stock")).status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert answer.status_code == 303 and "no%20longer%20works" in answer.headers["location"]
        console.cookies.set("serialtrack_session", session_id)  # a kept copy of the cookie is dead too
        assert (await console.get("/stock")).headers.get("location") == "/signin"
