"""Integration tests start real processes (OVS, the controller, Mininet hosts): a SIGTERM
(CI's timeout, a supervisor) must still run the fixtures' teardown, so make it an exit.

A browser test that fails says what the page did last (`trail`: its requests, their
answers and failures, its console), since what it waited for never showed."""

import signal
import sys

import pytest


def pytest_configure(config):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page")
    trail = getattr(page, "trail", None)
    if report.failed and trail:
        report.sections.append(("the page's last requests and console", "\n".join(trail)))
