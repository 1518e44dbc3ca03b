"""``tools/vendor_assets.py``: the JavaScript the HTML book serves itself (no third-party requests)."""

from __future__ import annotations

import importlib.util
import io
import json
import posixpath
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vendor_assets", ROOT / "tools" / "vendor_assets.py")
vendor_assets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vendor_assets)


def _member(name: str, kind=tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def test_only_wanted_files_are_unpacked():
    prefixes = ("package/es5/", "package/LICENSE")
    assert vendor_assets._wanted(_member("package/es5/tex-mml-chtml.js"), prefixes)
    assert vendor_assets._wanted(_member("package/LICENSE"), prefixes)
    assert not vendor_assets._wanted(_member("package/es5/tex-mml-chtml.js.map"), prefixes)
    assert not vendor_assets._wanted(_member("package/ts/index.ts"), prefixes)
    assert not vendor_assets._wanted(_member("package/es5/../../evil.js"), prefixes)
    assert not vendor_assets._wanted(_member("package/es5/link", tarfile.SYMTYPE), prefixes)


def test_versions_are_exact():
    for name, (version, folder, prefixes) in vendor_assets.PACKAGES.items():
        assert all(part.isdigit() for part in version.split(".")), (name, version)
        assert folder and prefixes


def test_without_npm_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(vendor_assets.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install npm"):
        vendor_assets.vendor(tmp_path)


def test_up_to_date_folder_needs_no_npm(tmp_path, monkeypatch):
    versions = {name: spec[0] for name, spec in vendor_assets.PACKAGES.items()}
    (tmp_path / "_vendor").mkdir()
    (tmp_path / vendor_assets.STAMP).write_text(json.dumps(versions))
    monkeypatch.setattr(vendor_assets.shutil, "which", lambda name: None)
    assert vendor_assets.vendor(tmp_path) is False
    # Our own widgets set-up script is refreshed even then.
    copied = tmp_path / "_vendor" / vendor_assets.WIDGETS_SETUP.name
    assert copied.read_text() == vendor_assets.WIDGETS_SETUP.read_text()


def test_unpacks_a_package_tarball(tmp_path, monkeypatch):
    """With ``npm pack`` imitated: the kept files land under _vendor/<folder>/, the rest not."""
    packages = {"demo": ("1.2.3", "demo", ("package/dist/",))}
    monkeypatch.setattr(vendor_assets, "PACKAGES", packages)

    def fake_run(command, **kwargs):
        dest = Path(command[command.index("--pack-destination") + 1])
        with tarfile.open(dest / "demo-1.2.3.tgz", "w:gz") as tar:
            for name, data in [("package/dist/a.js", b"A"), ("package/dist/a.js.map", b"M"),
                               ("package/src/b.ts", b"B")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        class Done:
            stdout = json.dumps([{"name": "demo", "filename": "demo-1.2.3.tgz"}])

        return Done()

    monkeypatch.setattr(vendor_assets.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(vendor_assets.subprocess, "run", fake_run)
    assert vendor_assets.vendor(tmp_path) is True
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [".versions.json", "_vendor/demo/dist/a.js",
                     f"_vendor/{vendor_assets.WIDGETS_SETUP.name}"]
    assert json.loads((tmp_path / ".versions.json").read_text()) == {"demo": "1.2.3"}


def test_config_points_at_the_vendored_files_and_no_cdn():
    """Every script _config.yml loads is local, and is one that the vendoring produces."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]["config"]
    assert sphinx["html_extra_path"] == ["_build/vendor"]
    scripts = [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]]
    folders = {spec[1] for spec in vendor_assets.PACKAGES.values()}
    for script in scripts:
        assert "://" not in script, f"{script} would be fetched from another host"
        # Sphinx puts relative script paths under _static/; html_extra_path copies to the root.
        path = posixpath.normpath(posixpath.join("_static", script))
        assert path.startswith("_vendor/"), path
        first = path.split("/")[1]
        assert first in folders or first == vendor_assets.WIDGETS_SETUP.name, path
    # require.js first, then our set-up, then the widgets manager (it needs both).
    assert [s.split("/")[2] for s in sphinx["nb_ipywidgets_js"]] == [
        "requirejs", "widgets-setup.js", "html-manager"]
