"""The layout of coinfer.defense and coinfer.privacy: re-exports, and no import circle."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from coinfer import defense, models, privacy

PACKAGES = (defense, privacy)


def _submodules(package):
    return [importlib.import_module(f"{package.__name__}.{info.name}")
            for info in pkgutil.iter_modules(package.__path__)]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_package_all_is_the_union_of_its_modules(package):
    names = set(package.__all__)
    assert len(names) == len(package.__all__), "duplicates in __all__"
    union = set()
    for module in _submodules(package):
        assert module.__doc__, f"{module.__name__} has no docstring"
        for name in module.__all__:
            assert getattr(package, name) is getattr(module, name), (module.__name__, name)
        union |= set(module.__all__)
    if package is defense:  # lives in coinfer.models, re-exported
        union.add("device_part_parameters")
    assert names == union


def test_moved_helpers_are_the_models_ones():
    assert defense.device_part_parameters is models.device_part_parameters
    assert "device_part_parameters" in models.__all__
    # private helper the tests use
    from coinfer.defense import _deployments_forward
    from coinfer.defense.audit import _deployments_forward as there

    assert _deployments_forward is there


def test_no_module_under_privacy_imports_the_defence():
    root = Path(privacy.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                names = [a.name for a in node.names]
                assert "defense" not in module and "defense" not in names, (path.name, module)
            elif isinstance(node, ast.Import):
                assert not any("defense" in a.name for a in node.names), path.name


def test_importing_privacy_does_not_import_the_defence():
    code = ("import sys, coinfer.privacy; "
            "print(sorted(m for m in sys.modules if m.startswith('coinfer.defense')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
