"""Headless Chromium driven by Selenium: the page's browser tests and its screenshot use it.

    with chromium(width=1400, height=900) as driver:     # a selenium WebDriver
        driver.get("http://127.0.0.1:8000")

It drives Debian's browser (`apt-get install chromium chromium-driver`: /usr/bin/chromium and
/usr/bin/chromedriver, of one version) through Selenium (the `web` extra), never a browser
it downloads. The flags keep a headless browser off the network: no first-run pages,
background updates, sync or QUIC, and a fresh profile each time, so it talks to the
loopback server and nothing else.

Left out: other browsers, a visible window.
"""
import contextlib
import os
import shutil
import tempfile

from gpt.extras import require

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def missing():
    """Why the browser cannot run here (one line), or None when it can."""
    if not any(os.path.exists(p) for p in CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        return "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
    try:
        require("selenium", "web", "gpt/web/browser.py")
    except ModuleNotFoundError as e:
        return str(e)
    return None


@contextlib.contextmanager
def chromium(width=1400, height=900):
    """A headless Chromium WebDriver with a fresh profile, closed (and its profile deleted) on exit."""
    webdriver = require("selenium.webdriver", "web", "gpt/web/browser.py")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in CHROMIUM if os.path.exists(p))
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:  # the page itself gets width x height (the window's frame would otherwise take some)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
