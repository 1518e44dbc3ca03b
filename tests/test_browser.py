"""The HTML book as a reader's browser shows it: every page opened in chromium, offline.

The book is served from ``_build/html`` on 127.0.0.1 and every page is opened by Playwright driving
Debian's ``chromium`` (``executable_path``; never a browser download) with every request to another
host blocked.  Each page is opened once (the ``visits`` fixture); the tests then check, across all
pages:

- no failed request (a blocked third-party request counts as failed) and no console error;
- mathematics rendered by the vendored MathJax (``mjx-container`` in every math element, no raw
  ``\\(`` left in the text);
- every ``<img>`` loads (``naturalWidth > 0``) and has non-empty alt text;
- the proof (sphinx-proof) and exercise (sphinx-exercise) directives of the source rendered as
  admonitions, none left as literal text;
- every saved widget view displays (or a static image sits beside it);
- every local link resolves, anchors included;
- each chapter's Colab launch button opens that chapter's notebook, in this repository, and the
  notebook exists.

A full-page screenshot of every page is saved to ``_build/screenshots/`` (``BOOK_SCREENSHOTS``).

Which HTML: ``BOOK_HTML`` when set (``make test-browser`` renders the committed outputs with
``make book-render`` and sets it to ``_build/html``); otherwise the test renders the committed
outputs itself, once, into a temporary folder.  Without Playwright or chromium the tests skip and say
how to install them (``pip install playwright``, ``apt-get install chromium``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Folders of the HTML output that hold assets, not pages.
ASSET_DIRS = {"_static", "_vendor", "_sources", "_images", "_downloads"}
PAGE_TIMEOUT_MS = 60_000


# ---------------------------------------------------------------------------------------------
# Fixtures: the HTML, a local server, the browser, one visit per page
# ---------------------------------------------------------------------------------------------
def _render(out: Path) -> Path:
    """Render the committed outputs (``make book-render``'s configuration) into ``out``."""
    subprocess.run([sys.executable, str(ROOT / "tools" / "vendor_assets.py"),
                    "--dest", str(ROOT / "_build" / "vendor")], check=True, cwd=ROOT)
    config = (ROOT / "_config.yml").read_text()
    config = config.replace("execute_notebooks: cache", 'execute_notebooks: "off"')
    out.mkdir(parents=True, exist_ok=True)
    (out / "_config_render.yml").write_text(config)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(ROOT), "--keep-going", "--config",
                             str(out / "_config_render.yml"), "--path-output", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    html = out / "_build" / "html"
    assert result.returncode == 0 or (html / "index.html").is_file(), result.stdout[-4000:]
    return html


@pytest.fixture(scope="session")
def sync_playwright():
    api = pytest.importorskip("playwright.sync_api",
                              reason="Playwright is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: install Debian's package with "
                    "`apt-get install chromium` (or set CHROMIUM to a chromium binary)")
    return api.sync_playwright


@pytest.fixture(scope="session")
def html_root(sync_playwright, tmp_path_factory) -> Path:
    given = os.environ.get("BOOK_HTML")
    root = Path(given).resolve() if given else _render(tmp_path_factory.mktemp("book"))
    if not (root / "index.html").is_file():
        pytest.fail(f"{root} has no index.html: build the book first (make book-render)")
    return root


@pytest.fixture(scope="session")
def server(html_root):
    handler = functools.partial(_QuietHandler, directory=str(html_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports failures itself
        pass


def _pages(html_root: Path) -> list[str]:
    return sorted(p.relative_to(html_root).as_posix() for p in html_root.rglob("*.html")
                  if not ASSET_DIRS & set(p.relative_to(html_root).parts))


@dataclass
class Visit:
    """What one page showed."""

    page: str
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    admonitions: dict = field(default_factory=dict)
    widgets: list[dict] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ids: set = field(default_factory=set)
    text_sample: str = ""


#: Runs in the page once it has loaded: collects everything the tests check.
COLLECT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; setTimeout(done, 10000); })));
  // Text outside code: where a raw \( would mean MathJax did not run.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement.closest('pre, code, script, style, .highlight, mjx-container')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  let text = '';
  while (walker.nextNode()) text += walker.currentNode.nodeValue;
  const mathEls = Array.from(document.querySelectorAll('.math'));
  const widgetViews = Array.from(document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'));
  return {
    math: {elements: mathEls.length,
           unrendered: mathEls.filter(e => !e.querySelector('mjx-container')).length,
           containers: document.querySelectorAll('mjx-container').length,
           rawDelimiters: (text.match(/\\\(|\\\[/g) || []).length,
           mathjaxLoaded: !!(window.MathJax && MathJax.version)},
    images: images.map(img => ({src: img.currentSrc || img.src, alt: img.getAttribute('alt'),
                                width: img.naturalWidth, complete: img.complete})),
    admonitions: {
      proof: document.querySelectorAll('div.proof.admonition, div.proof').length,
      exercise: document.querySelectorAll('div.exercise.admonition, div.exercise').length,
      solution: document.querySelectorAll('div.solution').length},
    widgets: widgetViews.map(s => {
      const area = s.closest('.cell_output') || s.parentElement;
      return {model: JSON.parse(s.textContent).model_id,
              rendered: area.querySelectorAll('.jupyter-widgets, .widget-container, .lm-Widget').length,
              fallbackImages: area.querySelectorAll('img').length};
    }),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    ids: Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name')),
    text: text.slice(0, 200000),
  };
}
"""


@pytest.fixture(scope="session")
def visits(sync_playwright, html_root, server) -> dict[str, Visit]:
    shots = Path(os.environ.get("BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    host = urlparse(server).netloc
    results: dict[str, Visit] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            # A fresh profile: Playwright's persistent-context-free launch uses a temporary one.
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          service_workers="block")
            for page_path in _pages(html_root):
                visit = Visit(page_path)

                page = context.new_page()
                page.route("**/*", _router(visit, host))
                page.on("console", lambda m, visit=visit: m.type == "error"
                        and visit.console_errors.append(f"{m.text} ({m.location.get('url')})"))
                page.on("pageerror", lambda e, visit=visit: visit.console_errors.append(str(e)))
                page.on("requestfailed", lambda r, visit=visit: urlparse(r.url).netloc == host
                        and visit.failed_requests.append(f"{r.url}: {r.failure}"))
                page.on("response", lambda r, visit=visit: r.status >= 400
                        and visit.failed_requests.append(f"{r.url}: HTTP {r.status}"))
                page.goto(server + page_path, wait_until="load", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
                data = page.evaluate(COLLECT_JS)
                page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
                page.screenshot(path=str(shots / (page_path.replace("/", "__")[:-5] + ".png")),
                                full_page=True, timeout=PAGE_TIMEOUT_MS)
                page.close()
                visit.math, visit.images = data["math"], data["images"]
                visit.admonitions, visit.widgets = data["admonitions"], data["widgets"]
                visit.links, visit.ids = data["links"], set(data["ids"])
                visit.text_sample = data["text"]
                results[page_path] = visit
        finally:
            browser.close()
    return results


def _router(visit: Visit, host: str):
    """Let requests to the local server through; block (and record) every other one."""

    def route(r):
        url = r.request.url
        if urlparse(url).netloc == host or url.startswith(("data:", "blob:", "about:")):
            r.continue_()
        else:
            visit.failed_requests.append(f"blocked third-party request {url}")
            r.abort("blockedbyclient")

    return route


def _report(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}:\n  " + "\n  ".join(items) for page, items in problems.items())


def _source_of(page: str) -> Path | None:
    """The notebook or markdown file a page was built from (None for generated pages)."""
    stem = ROOT / page[: -len(".html")]
    for suffix in (".ipynb", ".md"):
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return None


def _markdown_of(source: Path) -> str:
    if source.suffix == ".md":
        return source.read_text()
    nb = json.loads(source.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
def test_every_page_was_opened(visits, html_root):
    assert len(visits) >= 10
    assert {"book/intro.html"} <= set(visits)
    chapters = sorted(p.name for p in (ROOT / "book").glob("0*.ipynb"))
    for name in chapters:
        assert f"book/{name[:-6]}.html" in visits, f"chapter {name} has no page"


def test_no_failed_requests(visits):
    problems = {page: v.failed_requests for page, v in visits.items() if v.failed_requests}
    assert not problems, "failed or third-party requests:\n" + _report(problems)


def test_no_console_errors(visits):
    problems = {page: v.console_errors for page, v in visits.items() if v.console_errors}
    assert not problems, "console errors:\n" + _report(problems)


def test_mathematics_is_rendered(visits):
    problems = {}
    for page, v in visits.items():
        m = v.math
        issues = []
        if m["elements"] and not m["mathjaxLoaded"]:
            issues.append("MathJax did not load")
        if m["unrendered"]:
            issues.append(f"{m['unrendered']} of {m['elements']} math elements not rendered")
        if m["rawDelimiters"]:
            issues.append(f"{m['rawDelimiters']} raw \\( or \\[ left in the text")
        if issues:
            problems[page] = issues
    assert not problems, "mathematics:\n" + _report(problems)
    # The chapters do contain mathematics, so the check above is not vacuous.
    assert sum(v.math["containers"] for v in visits.values()) > 100


def test_images_load_and_have_alt_text(visits):
    problems = {}
    for page, v in visits.items():
        issues = [f"{img['src']}: not loaded" for img in v.images if not img["width"]]
        issues += [f"{img['src']}: no alt text" for img in v.images
                   if not (img["alt"] or "").strip()]
        if issues:
            problems[page] = issues
    assert not problems, "images:\n" + _report(problems)
    assert sum(len(v.images) for v in visits.values()) > 10


PROOF_DIRECTIVE = re.compile(r"[`:]{3,}\{prf:(\w+)\}")
EXERCISE_DIRECTIVE = re.compile(r"[`:]{3,}\{(exercise|solution)\}")


def test_proofs_and_exercises_render(visits):
    problems = {}
    checked = 0
    for page, v in visits.items():
        source = _source_of(page)
        if source is None:
            continue
        markdown = _markdown_of(source)
        proofs = PROOF_DIRECTIVE.findall(markdown)
        exercises = EXERCISE_DIRECTIVE.findall(markdown)
        issues = []
        if proofs and v.admonitions["proof"] < len(proofs):
            issues.append(f"{len(proofs)} prf: directives, {v.admonitions['proof']} rendered")
        n_ex = exercises.count("exercise")
        if n_ex and v.admonitions["exercise"] < n_ex:
            issues.append(f"{n_ex} exercises, {v.admonitions['exercise']} rendered")
        n_sol = exercises.count("solution")
        if n_sol and v.admonitions["solution"] < n_sol:
            issues.append(f"{n_sol} solutions, {v.admonitions['solution']} rendered")
        for literal in ("{prf:", "{exercise}", "{solution}", "{glue:", "{numref}", "{cite}"):
            if literal in v.text_sample:
                issues.append(f"literal {literal!r} in the page text (a directive or role "
                              "that did not render)")
        checked += bool(proofs or exercises)
        if issues:
            problems[page] = issues
    assert not problems, "proof / exercise blocks:\n" + _report(problems)
    assert checked >= 3


def test_saved_widgets_display(visits):
    problems = {}
    for page, v in visits.items():
        issues = [f"widget {w['model']}: neither displayed nor a static image beside it"
                  for w in v.widgets if not (w["rendered"] or w["fallbackImages"])]
        if issues:
            problems[page] = issues
    assert not problems, "widgets:\n" + _report(problems)


def test_internal_links_resolve(visits, html_root, server):
    problems = {}
    for page, v in visits.items():
        issues = []
        for href in set(v.links):
            if not href.startswith(server):
                continue
            url, fragment = urldefrag(href)
            rel = unquote(url[len(server):]) or "index.html"
            if rel.endswith("/"):
                rel += "index.html"
            target = html_root / rel
            if not target.is_file():
                issues.append(f"{href}: no file {rel}")
            elif fragment and rel in visits and unquote(fragment) not in visits[rel].ids:
                issues.append(f"{href}: no anchor #{fragment} in {rel}")
        if issues:
            problems[page] = sorted(issues)
    assert not problems, "broken internal links:\n" + _report(problems)


def test_colab_buttons_open_existing_notebooks(visits):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo_url = config["repository"]["url"].rstrip("/")
    owner_repo = "/".join(urlparse(repo_url).path.strip("/").split("/")[:2])
    branch = config["repository"].get("branch", "main")
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    problems = {}
    chapters = 0
    for page, v in visits.items():
        source = _source_of(page)
        links = {h for h in v.links if h.startswith(colab)}
        issues = []
        if source is not None and source.suffix == ".ipynb":
            chapters += 1
            expected = (f"{colab}/github/{owner_repo}/blob/{branch}/"
                        f"{source.relative_to(ROOT).as_posix()}")
            if expected not in links:
                issues.append(f"no Colab button to {expected} (found {sorted(links)})")
        for link in links:
            match = re.fullmatch(rf"{re.escape(colab)}/github/([^/]+/[^/]+)/blob/([^/]+)/(.+)",
                                 link)
            if not match:
                issues.append(f"{link}: not a Colab link to a GitHub notebook")
                continue
            if match.group(1) != owner_repo or match.group(2) != branch:
                issues.append(f"{link}: not {owner_repo} at {branch}")
            if not (ROOT / unquote(match.group(3))).is_file():
                issues.append(f"{link}: {match.group(3)} does not exist in the repository")
        if issues:
            problems[page] = issues
    assert not problems, "Colab links:\n" + _report(problems)
    assert chapters >= 4
