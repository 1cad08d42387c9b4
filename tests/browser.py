"""Headless chromium for report tests: find it, screenshot a page, dump its DOM.

Why a helper module: two test files render reports (one run per recipe, and the report's own tests); both
need the same flags (no sandbox as root, no network, a throwaway profile) and the same CI rule: under
``CI`` a missing chromium fails the test instead of skipping it (``.ci/run`` installs Debian's package).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def find_chromium() -> str | None:
    """Debian's /usr/bin/chromium, else whatever ``chromium`` is on PATH."""
    return str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")


def require_chromium() -> str:
    found = find_chromium()
    if found is None:
        message = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must install it")
        pytest.skip(message)
    return found


def chromium(args: list[str], url: str, profile: Path, size: tuple[int, int] = (1280, 4000)
             ) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
    return subprocess.run([require_chromium(), *flags, *args, url], capture_output=True, text=True, timeout=120)


def screenshot(html_file: Path, png: Path, profile: Path, size: tuple[int, int] = (1280, 4000)
               ) -> subprocess.CompletedProcess[str]:
    """Render ``html_file`` to ``png`` in a window of ``size`` (width, height: the part of the page the PNG
    shows); the returned process holds chromium's log (JS errors show there)."""
    return chromium([f"--screenshot={png}", "--enable-logging=stderr", "--v=0"], html_file.resolve().as_uri(), profile,
                    size)


def distinct_colours(png: Path) -> int:
    from PIL import Image  # matplotlib depends on pillow

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours or [])


def dom(html_file: Path, profile: Path, size: tuple[int, int] = (1280, 4000)) -> str:
    """The page's DOM after its scripts ran, serialised (what a probe script wrote into it included)."""
    return chromium(["--dump-dom"], html_file.resolve().as_uri(), profile, size).stdout


def probe(html_file: Path, script: str, profile: Path, size: tuple[int, int] = (1000, 3000)) -> Any:
    """Run ``script`` (the body of a JS function returning something JSON can hold) at the end of a copy of the
    page, after the page's own script, in a window of ``size``; return its value (``{"error": ...}`` if it threw).

    Why a copy with a script appended: chromium's ``--dump-dom`` is the one headless mode that needs no driver,
    and the value comes back through the DOM it prints."""
    js = ("<script>(function(){var out;try{out=(function(){" + script + "})();}catch(e){out={error:String(e)};}"
          "var pre=document.createElement('pre');pre.id='probe-out';pre.textContent=JSON.stringify(out);"
          "document.body.appendChild(pre);})();</script>")
    text = html_file.read_text(encoding="utf-8")
    cut = text.rindex("</body>")
    copy = profile.parent / f"{html_file.stem}.probe.html"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text[:cut] + js + text[cut:], encoding="utf-8")
    found = re.search(r'<pre id="probe-out">(.*?)</pre>', dom(copy, profile, size), re.S)
    assert found, "the probe wrote nothing (chromium failed to load the page?)"
    return json.loads(unescape(found.group(1)))
