"""``report.html``: one self-contained page, read in a real browser where one is installed
(CI installs Debian's chromium): the verdict, the table and the pictures are on it.

With ``DANET_PARITY_ARTIFACTS`` set (``.ci/run`` sets it), the screenshot of the failing
report is kept there."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from parity.frontends.cli.main import main

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
HEADLESS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def failing_report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    port = "tests.power.ports:PAMSoftmaxWrongAxis"
    argv = [
        "check",
        "pam",
        "--port",
        port,
        "--example",
        "2,16,3,4,1.0,0",
        "--report",
        str(directory),
    ]
    assert main(argv) == 1
    return directory / "pam"


def test_the_page_is_self_contained_and_says_everything(failing_report):
    page = (failing_report / "report.html").read_text()
    assert "class='verdict fail'>FAIL</span>" in page
    assert page.count("<tr class='failed'>") >= 3  # the failing tensors, in the table
    assert "the softmax normalises over the query positions" in page  # the diagnosis
    assert "first line it never computes: attention.py:53" in page  # the localization
    assert "parity check pam --port tests.power.ports:PAMSoftmaxWrongAxis --example" in page
    assert page.count("src='data:image/png;base64,") >= 4  # the pictures, inline
    assert "alt='attention.png'" in page  # the attention weights where the port first errs
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing fetched


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (CI installs Debian's chromium)")
def test_a_browser_shows_the_verdict_the_table_and_the_pictures(failing_report):
    url = (failing_report / "report.html").as_uri()
    dom = subprocess.run(
        [BROWSER, *HEADLESS, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'class="verdict fail"' in dom and ">FAIL<" in dom
    assert 'id="tensors"' in dom and "grad[query_conv.weight]" in dom
    assert dom.count('data-loaded="yes"') >= 4, "the pictures did not load in the browser"
    screenshot = failing_report / "screenshot.png"
    subprocess.run(
        [BROWSER, *HEADLESS, "--window-size=1280,2600", f"--screenshot={screenshot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a page with pictures, not a blank one
    keep = os.environ.get("DANET_PARITY_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / "report_screenshot.png")
