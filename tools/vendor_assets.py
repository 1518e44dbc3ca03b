"""Fetch the JavaScript the HTML book needs into a folder the book serves itself.

The book is about privacy, so reading it must not send a request to a third party.  By default
Sphinx loads MathJax, and myst-nb loads require.js and the Jupyter widgets HTML manager, from public
CDNs.  This script downloads exact versions of them from the npm registry (``npm pack``: the
package tarball alone, no dependencies, no install scripts) and unpacks the files the pages use into

    _build/vendor/_vendor/mathjax/       MathJax 3 (es5 bundles, fonts, lazily loaded extensions)
    _build/vendor/_vendor/requirejs/     require.js
    _build/vendor/_vendor/html-manager/  @jupyter-widgets/html-manager's dist/ (embed-amd.js, fonts)
    _build/vendor/_vendor/widgets-setup.js  (from tools/): require.js paths to that copy, and
                                            MathJax 2 calls of the widgets translated for MathJax 3

``_config.yml`` copies ``_build/vendor`` into the HTML output (``html_extra_path``, not
``_static/``: Jupyter Book adds a ``<script>`` tag for every ``.js`` under a ``_static`` folder) and
points ``mathjax_path`` and ``nb_ipywidgets_js`` at these files.  ``make book`` and
``make book-render`` run this script; it does nothing when the folder already holds these versions.

Usage: ``python tools/vendor_assets.py [--dest _build/vendor]``.  Needs ``npm`` (Debian:
``apt-get install npm``); without it the script stops with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: npm package -> (exact version, folder under ``_vendor/``, tarball members kept (prefixes)).
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mathjax": ("3.2.2", "mathjax", ("package/es5/", "package/LICENSE")),
    "requirejs": ("2.3.8", "requirejs", ("package/require.js", "package/LICENSE")),
    "@jupyter-widgets/html-manager": ("1.0.15", "html-manager", ("package/dist/", "package/LICENSE")),
}
#: Source maps are for debugging the bundles; the pages never request them.
SKIPPED_SUFFIXES = (".map",)
STAMP = ".versions.json"
#: Our own loader configuration, copied beside the packages on every run.
WIDGETS_SETUP = Path(__file__).with_name("widgets-setup.js")


def _wanted(member: tarfile.TarInfo, prefixes: tuple[str, ...]) -> bool:
    name = member.name
    return (member.isfile() and name.startswith(prefixes) and not name.endswith(SKIPPED_SUFFIXES)
            and ".." not in Path(name).parts)


def vendor(dest: Path) -> bool:
    """Unpack the pinned packages into ``dest / "_vendor"``; return False when already there."""
    versions = {name: spec[0] for name, spec in PACKAGES.items()}
    stamp = dest / STAMP
    root = dest / "_vendor"
    if stamp.is_file() and json.loads(stamp.read_text()) == versions:
        shutil.copyfile(WIDGETS_SETUP, root / WIDGETS_SETUP.name)
        return False
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("error: the book vendors MathJax, require.js and the Jupyter widgets manager from "
                 "the npm registry, and `npm` is not installed.  Install it (Debian/Ubuntu: "
                 "`apt-get install npm`; elsewhere: https://nodejs.org) and run make again.")
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, version in versions.items()]
        out = subprocess.run([npm, "pack", *specs, "--json", "--pack-destination", tmp,
                              "--ignore-scripts"],
                             check=True, capture_output=True, text=True).stdout
        tarballs = {entry["name"]: Path(tmp) / entry["filename"] for entry in json.loads(out)}
        shutil.rmtree(root, ignore_errors=True)
        for name, (version, folder, prefixes) in PACKAGES.items():
            with tarfile.open(tarballs[name]) as tar:
                members = [m for m in tar.getmembers() if _wanted(m, prefixes)]
                if not members:
                    raise RuntimeError(f"{name}@{version}: none of {prefixes} in the tarball")
                for member in members:
                    target = root / folder / Path(member.name).relative_to("package")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            print(f"vendored {name}@{version} into {root / folder} ({len(members)} files)")
    shutil.copyfile(WIDGETS_SETUP, root / WIDGETS_SETUP.name)
    stamp.write_text(json.dumps(versions, indent=1) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("_build/vendor"))
    args = parser.parse_args(argv)
    if not vendor(args.dest):
        print(f"{args.dest}: vendored assets up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
