"""The README stays a product page and the documentation site builds with no broken link."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    assert pages <= built, pages - built  # every page is in the site (and in the nav: strict warns otherwise)


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 350
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets and all((ROOT / t).exists() for t in targets if "://" not in t), targets
    for section in ("## Set-up: two commands", "## A sweep", "## Your own data", "## Use a tuned model",
                    "## Scale out", "## Results"):
        assert section in text
