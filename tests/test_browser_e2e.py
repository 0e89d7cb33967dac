"""A real browser through the tether forward: headless Chromium opens the
printed URL, makes a notebook, plots with matplotlib, saves; then the link to the server
is cut and restored, and the same tab runs another cell in the same kernel."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, supervisor
from testing.helpers import browser as chromium
from testing.helpers.browser import wait_for
from testing.helpers.cli import Tether
from testing.helpers.users import as_user, home_of
from tests.conftest import SandboxTopology

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not chromium.available():
        pytest.skip("chromium and chromium-driver are not installed")
    profile = Path(tempfile.mkdtemp(prefix="tt-chromium-"))
    driver = chromium.chromium(profile)
    try:
        yield driver
    finally:
        try:
            driver.save_screenshot(str(tmp_path / "jupyterlab.png"))  # the CI artifact
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def far_plot(tether: Tether, topology: SandboxTopology, plot_env: Path) -> Iterator[dict[str, Any]]:
    """`tether up tt-far` (through the jump host) with matplotlib, in an empty root_dir."""
    root = home_of(topology.user) / "tt-browser"
    as_user(topology.user, ["rm", "-rf", str(root)])
    assert as_user(topology.user, ["mkdir", str(root)]).returncode == 0
    tether.profile("tt-far", env=str(plot_env), root_dir=str(root))
    res = tether("up", "tt-far", "--no-browser")
    assert res.rc == 0, res.err
    url = res.out.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and "token=" in url
    try:
        yield {"url": url, "root": root, "token": url.split("token=")[1]}
    finally:
        topology.topology.restore()
        tether("down", "tt-far")
        as_user(topology.user, ["rm", "-rf", str(root)])


def run_cell(driver: WebDriver, code: str) -> None:
    """Type ``code`` into the active cell and run it with Shift+Enter."""
    editor = wait_for(
        "the active cell's editor",
        lambda: driver.find_element(
            By.CSS_SELECTOR, ".jp-Notebook .jp-Cell.jp-mod-active .cm-content"
        ),
    )
    editor.click()
    editor.send_keys(code)
    editor.send_keys(Keys.SHIFT, Keys.ENTER)


def outputs(driver: WebDriver) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-OutputArea-output"))


def test_notebook_plot_save_and_survive_a_link_cut(
    browser: WebDriver, far_plot: dict[str, Any], topology: SandboxTopology
) -> None:
    driver = browser
    driver.get(far_plot["url"])
    wait_for("JupyterLab's launcher", lambda: driver.find_element(By.CSS_SELECTOR, ".jp-Launcher"))
    card = wait_for(
        "the Python notebook card",
        lambda: driver.find_element(By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]'),
    )
    card.click()
    wait_for(
        "an idle kernel",
        lambda: (
            driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell.jp-mod-active .cm-content")
            and "Idle" in (driver.find_element(By.CSS_SELECTOR, "#jp-main-statusbar").text or "")
        ),
        seconds=90,
    )
    run_cell(
        driver,
        "answer = 41\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()",
    )
    img = wait_for(
        "the plot in the output area",
        lambda: driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output img"),
        seconds=120,
    )
    assert (img.get_attribute("src") or "").startswith("data:image/png")

    # Save, and read the notebook the server wrote.
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.CONTROL, "s")
    # JupyterLab 4 offers to rename an Untitled notebook on its first save.
    accept = wait_for(
        "the save dialog's accept button",
        lambda: driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"),
        seconds=15,
    )
    accept.click()
    root: Path = far_plot["root"]

    def saved() -> dict[str, Any] | None:
        for path in root.glob("*.ipynb"):
            nb: dict[str, Any] = json.loads(path.read_text())
            for cell in nb["cells"]:
                for out in cell.get("outputs", []):
                    if "image/png" in out.get("data", {}):
                        return nb
        return None

    nb = wait_for("the saved .ipynb with the plot", saved, seconds=30)
    assert "answer = 41" in "".join(nb["cells"][0]["source"])

    # Cut the workstation--jump link, wait until the tunnel knows, restore it.
    topology.topology.cut()
    try:
        wait_for(
            "the supervisor to notice the cut",
            lambda: (supervisor.read_status("tt-far") or {}).get("state") != "connected",
            seconds=30,
        )
    finally:
        topology.topology.restore()
    port = int(far_plot["url"].split(":")[2].split("/")[0])
    wait_for(
        "the forward to answer again",
        lambda: jupyter_api.status(port, far_plot["token"], timeout=1),
        seconds=30,
    )
    # Same tab, no reload: a new cell sees the variable from before the cut.
    before = len(outputs(driver))
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ESCAPE, "b")
    run_cell(driver, "print(answer + 1)")
    wait_for(
        "the new cell's output from the same kernel",
        lambda: len(outputs(driver)) > before and outputs(driver)[-1].text.strip() == "42",
        seconds=90,
    )
