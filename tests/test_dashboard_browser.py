"""The dashboard in a real browser (Debian's chromium, headless, through selenium), driven as an
operator does: log in, watch a charge point, send it a command, kick it, write a rule with the
tester, break the config and see the error at its key, fix it, apply, reload. Every test ends with
the browser console free of errors. Screenshots: DASHBOARD_SCREENSHOTS=docs/img (tests/dashboard_support.py)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from engine.config.overlay import read_overlay
from engine.log import QUIETED_LOGGERS
from tests.admin_support import gateway_in_thread
from tests.dashboard_support import (
    browser,
    charge_point,
    click,
    console_errors,
    log_in,
    screenshot,
    set_text,
    wait,
    wait_gone,
)
from tests.ocpp_support import Gateway

pytestmark = pytest.mark.timeout(120)
AUTH = ("admin", "public")


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    # the config test applies log.level = debug through the page, and a reload sets up logging for the
    # whole process: put the logging of this pytest process back afterwards (left at debug, the test
    # clients' websockets loggers format every frame, invalid UTF-8 included, for the rest of the run)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    try:
        with gateway_in_thread(tmp_path_factory.mktemp("dashboard")) as gateway:
            yield gateway
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in named.items():
            logging.getLogger(name).setLevel(was)


@pytest.fixture(scope="module")
def chrome():
    driver = browser()
    yield driver
    driver.quit()


@pytest.fixture
def page(chrome, gw):
    """The browser, logged out, on a blank page; the console must be clean when the test ends."""
    chrome.get(base(gw) + "/dashboard/favicon.svg")
    chrome.delete_all_cookies()
    console_errors(chrome)  # forget what came before
    yield chrome
    assert console_errors(chrome) == []


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.admin_port}"


def api_get(gw: Gateway, path: str) -> httpx.Response:
    return httpx.get(gw.admin_url + path, auth=AUTH, timeout=10)


def test_log_in_with_a_wrong_then_the_right_password_and_log_out(page, gw, tmp_path):
    log_in(page, base(gw), password="wrong")
    wait(page, "#login-error", "bad username or password")
    screenshot(page, tmp_path, "login")
    page.find_element(By.CSS_SELECTOR, "#login-password").clear()
    page.find_element(By.CSS_SELECTOR, "#login-password").send_keys("public")
    page.find_element(By.CSS_SELECTOR, "#login-submit").click()
    wait(page, "#card-online", "Charge points online")
    assert page.find_element(By.CSS_SELECTOR, "#who").text == "admin"
    cookie = page.get_cookie("ocppgw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.execute_script("return document.cookie") == ""  # the page's scripts never see it
    page.refresh()  # the session outlives a reload of the page
    wait(page, "#card-online", "Charge points online")
    page.find_element(By.CSS_SELECTOR, "#logout").click()
    wait(page, "#login-error", "Logged out.")
    page.refresh()
    wait(page, "#login-user")  # and no longer logged in


def test_the_lockout_is_shown_on_the_login_form(page, tmp_path):
    with gateway_in_thread(tmp_path, "dashboard.unsuccessful_login_max_attempts = 2\n") as locked:
        for _ in range(2):
            log_in(page, base(locked), password="wrong")
            wait(page, "#login-error", "bad username or password")
        log_in(page, base(locked))
        wait(page, "#login-error", "too many failed logins")


def test_overview_shows_the_node_and_each_panel_or_says_it_is_not_available(page, gw, tmp_path):
    log_in(page, base(gw))
    wait(page, "#card-node", gw.node.settings.node.name)
    plots = wait(page, "#overview-plots figure.plot, #overview-plots .unavailable")
    if api_get(gw, "/monitor").status_code == 404:
        assert "GET /api/v5/monitor" in plots.text
    else:
        assert len(page.find_elements(By.CSS_SELECTOR, "#overview-plots figure.plot")) == 3
    alarms = wait(page, "#overview-alarms p, #overview-alarms ul")
    if api_get(gw, "/alarms").status_code == 404:
        assert "GET /api/v5/alarms" in alarms.text
    screenshot(page, tmp_path, "overview")
    # the plot the last hour is drawn with, on samples of the monitor's shape
    drawn = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/dashboard/plot.js').then((m) => {
          const figure = m.linePlot('test plot', [
            {label: 'received', cls: 's1', points: [[1700000000000, 1], [1700000010000, 4], [1700000020000, 2]]},
            {label: 'sent', cls: 's2', points: []}]);
          document.body.append(figure);
          done([figure.querySelectorAll('path.series').length, figure.querySelector('.legend').textContent]);
        });""")
    assert drawn == [1, "received: 2sent"]


def test_charge_points_list_search_one_charge_point_command_and_kick(page, gw, tmp_path):
    with charge_point(gw.url("UI-CP1")) as cp1, charge_point(gw.url("UI-CP2")):
        cp1.call("BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "Volt"})
        log_in(page, base(gw))
        wait(page, "#card-online")
        page.find_element(By.CSS_SELECTOR, 'nav a[data-page="clients"]').click()
        wait(page, 'tr[data-clientid="UI-CP1"]')
        wait(page, 'tr[data-clientid="UI-CP2"]')
        screenshot(page, tmp_path, "clients")
        page.find_element(By.CSS_SELECTOR, "#clients-search").send_keys("CP1")
        wait_gone(page, 'tr[data-clientid="UI-CP2"]')  # searched by the gateway (like_clientid)
        assert page.find_element(By.CSS_SELECTOR, "#clients-count").text == "1–1 of 1"
        # the fleet is never loaded into the browser: one page of 50, searched by the gateway (the
        # overview's count asks for one)
        asked = page.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)"
                                    ".filter((n) => n.includes('/gateways/ocpp/clients?'))")
        assert asked and all(url.endswith("?limit=1") or ("limit=50" in url and "page=" in url) for url in asked)
        assert any("like_clientid=CP1" in url for url in asked)
        page.find_element(By.LINK_TEXT, "UI-CP1").click()
        wait(page, "#client-details", "ocpp1.6")

        # a payload that is not JSON is stopped in the page
        wait(page, "#call-action").send_keys("Reset")
        payload = page.find_element(By.CSS_SELECTOR, "#call-payload")
        payload.clear()
        payload.send_keys('{"type": ')
        page.find_element(By.CSS_SELECTOR, "#call-send").click()
        wait(page, "#call-answer", "not JSON")
        assert not [f for f in cp1.received if f[0] == 2]
        # a good one reaches the charge point, and its answer is shown
        payload.clear()
        payload.send_keys('{"type": "Soft"}')
        page.find_element(By.CSS_SELECTOR, "#call-send").click()
        wait(page, "#call-answer", "Accepted")
        assert [f[2:] for f in cp1.received if f[0] == 2] == [["Reset", {"type": "Soft"}]]
        screenshot(page, tmp_path, "charge-point")

        page.find_element(By.CSS_SELECTOR, "#client-kick").click()
        wait(page, "#client-kick", "Really kick?")
        page.find_element(By.CSS_SELECTOR, "#client-kick").click()
        wait(page, "#kick-state", "Kicked.")
        assert cp1.closed.wait(10)
        wait(page, "#client-gone", "not connected")


def test_a_command_that_does_not_match_its_schema_is_not_sent(page, gw):
    with charge_point(gw.url("UI-CP6")) as cp:
        log_in(page, base(gw))
        page.get(base(gw) + "/#/clients/UI-CP6")
        WebDriverWait(page, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#call-actions option[value="Reset"]'))
        wait(page, "#call-action").send_keys("Reset")
        payload = page.find_element(By.CSS_SELECTOR, "#call-payload")
        payload.clear()
        payload.send_keys('{"type": "Bogus"}')
        page.find_element(By.CSS_SELECTOR, "#call-send").click()
        wait(page, "#call-answer.error", "Not sent")
        assert "type" in page.find_element(By.CSS_SELECTOR, "#call-answer").text
        assert not [f for f in cp.received if f[0] == 2]


def test_a_connector_goes_from_available_to_charging_in_the_list(page, gw, tmp_path):
    with charge_point(gw.url("UI-CP3")) as cp:
        cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})
        log_in(page, base(gw))
        page.get(base(gw) + "/#/clients")
        wait(page, 'tr[data-clientid="UI-CP3"] .chip.status-available', "Available")
        cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})
        wait(page, 'tr[data-clientid="UI-CP3"] .chip.status-charging', "Charging")
        Select(page.find_element(By.CSS_SELECTOR, "#clients-status")).select_by_value("Faulted")
        wait_gone(page, 'tr[data-clientid="UI-CP3"]')  # "all Faulted": it is not
        Select(page.find_element(By.CSS_SELECTOR, "#clients-status")).select_by_value("Charging")
        wait(page, 'tr[data-clientid="UI-CP3"]')
        screenshot(page, tmp_path, "clients-status")


def test_the_live_trace_shows_a_frame_as_it_happens(page, gw, tmp_path):
    with charge_point(gw.url("UI-CP4")) as cp:
        log_in(page, base(gw))
        page.get(base(gw) + "/#/clients/UI-CP4")
        wait(page, "#trace-state", "live")
        cp.call("Heartbeat", {})
        wait(page, "#trace-lines li.in", "Heartbeat")
        screenshot(page, tmp_path, "trace")
        page.find_element(By.CSS_SELECTOR, "#trace-pause").click()
        cp.call("Heartbeat", {})
        page.find_element(By.CSS_SELECTOR, "#trace-clear").click()
        assert page.find_elements(By.CSS_SELECTOR, "#trace-lines li") == []

        # recorded to a file on the node (EMQX's trace API), downloaded as JSON Lines
        page.find_element(By.CSS_SELECTOR, "#recording-start").click()
        wait(page, "#recordings-rows tr[data-trace] td", "UI-CP4-")
        wait(page, "#recordings-rows tr[data-trace]", "running")
        cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})
        link = page.find_element(By.CSS_SELECTOR, "#recordings-rows tr[data-trace] a").get_attribute("href")
        text = ""
        for _ in range(50):
            text = page.execute_async_script(
                "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then((r) => r.text()).then(done);", link)
            if "StatusNotification" in text:
                break
            time.sleep(0.1)
        assert any('"StatusNotification"' in json.loads(line)["frame"] for line in text.splitlines() if "frame" in line)
        page.find_element(By.CSS_SELECTOR, "#recordings-rows button.trace-stop").click()
        wait(page, "#recordings-rows tr[data-trace]", "stopped")
        page.find_element(By.CSS_SELECTOR, "#recordings-rows button.trace-delete").click()
        wait_gone(page, "#recordings-rows tr[data-trace]")


def test_create_a_rule_with_the_tester_then_disable_it(page, gw, tmp_path):
    log_in(page, base(gw))
    wait(page, "#card-online")
    page.find_element(By.CSS_SELECTOR, 'nav a[data-page="rules"]').click()
    wait(page, "#rule-new").click()
    sql = wait(page, "#rule-sql")
    set_text(page, sql, 'SELECT nope(payload) AS x FROM "ocpp/cp/+"')
    page.find_element(By.CSS_SELECTOR, "#rule-test").click()
    output = wait(page, "#rule-output.error", "line 1, column 8")
    assert "  1 | SELECT nope(payload)" in output.text and "\n" + " " * 13 + "^" in output.text
    set_text(page, sql, 'SELECT clientid, payload.action AS action FROM "ocpp/cp/+"')
    page.find_element(By.CSS_SELECTOR, "#rule-test").click()
    wait(page, "#rule-output.ok", '"action": "Heartbeat"')
    page.find_element(By.CSS_SELECTOR, "#rule-id").send_keys("ui_rule")
    screenshot(page, tmp_path, "rules")
    page.find_element(By.CSS_SELECTOR, "#rule-save").click()
    wait(page, 'tr[data-rule="ui_rule"]')
    assert gw.node.settings.rule_engine.rules["ui_rule"].enable
    page.find_element(By.CSS_SELECTOR, "#rule-cancel").click()
    click(page, 'button.edit[data-rule="ui_rule"]')  # the list is drawn again after the cancel
    assert wait(page, "#rule-id").get_attribute("disabled") is not None  # the id of a rule stays
    set_text(page, page.find_element(By.CSS_SELECTOR, "#rule-sql"), 'SELECT clientid FROM "ocpp/cp/+"')
    page.find_element(By.CSS_SELECTOR, "#rule-save").click()
    wait(page, 'tr[data-rule="ui_rule"] code', 'SELECT clientid FROM "ocpp/cp/+"')
    assert gw.node.settings.rule_engine.rules["ui_rule"].sql == 'SELECT clientid FROM "ocpp/cp/+"'
    click(page, 'button.toggle[data-rule="ui_rule"]')
    wait(page, 'button.toggle[data-rule="ui_rule"]', "Enable")
    assert not gw.node.settings.rule_engine.rules["ui_rule"].enable


def test_actions_and_connectors_are_listed(page, gw, tmp_path):
    log_in(page, base(gw))
    wait(page, "#card-online")
    page.get(base(gw) + "/#/actions")
    wait(page, "#actions-rows tr")
    wait(page, "#connectors-rows tr")
    screenshot(page, tmp_path, "actions")


def test_break_the_config_see_the_error_at_its_key_fix_apply_and_reload(page, gw, tmp_path):
    log_in(page, base(gw))
    wait(page, "#card-online")
    page.find_element(By.CSS_SELECTOR, 'nav a[data-page="config"]').click()
    text = wait(page, "#config-text")
    wait(page, "#config-gutter", "1")
    original = text.get_attribute("value")
    assert "max_request_body" in original
    lines = original.split("\n")
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("max_request_body"))
    broken = lines.copy()
    broken[at] = broken[at].split("=")[0] + '= "lots"'
    set_text(page, text, "\n".join(broken))
    page.find_element(By.CSS_SELECTOR, "#config-validate").click()
    error = wait(page, '#config-errors li[data-key="dashboard.max_request_body"]')
    assert error.get_attribute("data-line") == str(at + 1) and "expected a size" in error.text
    marked = page.find_elements(By.CSS_SELECTOR, "#config-gutter span.err")  # the line is marked beside the text
    assert [m.get_attribute("textContent").split()[0] for m in marked] == [str(at + 1)]
    assert "expected a size" in marked[0].get_attribute("title")
    error.click()  # takes the operator to the line
    selected = page.execute_script("const t = arguments[0]; return t.value.slice(t.selectionStart, t.selectionEnd)", text)
    assert selected == broken[at]
    screenshot(page, tmp_path, "config-error")
    page.find_element(By.CSS_SELECTOR, "#config-apply").click()
    wait(page, "#config-state", "Refused")
    assert gw.node.settings.dashboard.max_request_body == 1024 * 1024

    fixed = original.replace('level = "info"', 'level = "debug"', 1)
    assert fixed != original
    set_text(page, text, fixed)
    page.find_element(By.CSS_SELECTOR, "#config-validate").click()
    wait(page, "#config-state", "The config is valid.")
    page.find_element(By.CSS_SELECTOR, "#config-apply").click()
    wait(page, "#config-state", "Applied")
    assert gw.node.settings.log.level == "debug"
    overlay = read_overlay(gw.node.settings.node.data_dir)  # only what the operator changed was sent
    assert overlay["log"] == {"level": "debug"} and not {"node", "dashboard", "mqtt", "gateway"} & set(overlay)
    page.find_element(By.CSS_SELECTOR, "#config-apply").click()
    wait(page, "#config-state", "Nothing changed")  # the text was reloaded: it is the effective config now
    page.find_element(By.CSS_SELECTOR, "#config-reload").click()
    wait(page, "#config-state", "Reloaded from the files")
    assert gw.node.settings.log.level == "debug"  # the overlay the page applied is kept
    # the password, shown as "******", was not sent back: it is what it was
    assert gw.node.settings.dashboard.default_password == "public" and api_get(gw, "/status").status_code == 200


def test_the_config_page_sends_only_what_changed_and_never_a_masked_secret(page, gw):
    log_in(page, base(gw))
    wait(page, "#card-online")
    got = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/dashboard/page_config.js').then((m) => {
          const before = 'a {\\n  "x/+" {\\n    k = 1\\n  }\\n  password = "******"\\n  m {}\\n  l = ["p", "q"]\\n}\\n';
          const after = before.replace('k = 1', 'k = 2').replace('"******"', '"new-pw"');
          done([m.changedLines(before, before), m.changedLines(before, after), m.changedLines(before, before.replace('m {}', 'm { z = 1 }')),
                m.changedLines(before, before.replace('l = ["p", "q"]', 'l = ["p"]')),
                Object.fromEntries(m.keyLines(before))]);
        });""")
    unchanged, changed, unparsable, listed, lines = got
    assert unchanged == []
    assert changed == ['a."x/+".k = 2', 'a.password = "new-pw"']  # a secret typed anew is sent
    assert unparsable is None  # `m { z = 1 }` on one line is not the printed shape: the whole text goes
    assert listed == ['a.l = ["p"]']
    assert lines == {"a": 1, "a.x/+": 2, "a.x/+.k": 3, "a.password": 5, "a.m": 6, "a.l": 7}
