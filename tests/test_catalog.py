"""Meta-tests: the committed catalog matches the registry; every component has a test."""
from __future__ import annotations

import ast
from pathlib import Path

from connector.catalog_doc import bundled_markdown, render_markdown
from connector.registry import build_catalog, make_manager

ROOT = Path(__file__).resolve().parent.parent


def bundled_catalog():
    """The catalog of the bundled plugins only (third-party packages may be installed)."""
    from importlib import metadata

    bundled = [ep.name for ep in metadata.entry_points(group="connector")
               if ep.value.startswith("connector.")]
    return build_catalog(make_manager(load=bundled))


def test_docs_catalog_is_generated_from_the_registry():
    committed = (ROOT / "docs" / "catalog.md").read_text()
    assert committed == render_markdown(bundled_catalog()) == bundled_markdown(), (
        "docs/catalog.md is stale: run  python -m connector.catalog_doc > docs/catalog.md")


def covered_keys() -> set[str]:
    """Collect the keys named in @pytest.mark.covers(...) across the test suite."""
    keys: set[str] = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "covers"):
                keys.update(arg.value for arg in node.args
                            if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return keys


def test_every_trigger_action_and_search_has_a_test():
    catalog = bundled_catalog()
    registered = {*catalog.triggers, *catalog.actions, *catalog.searches}
    missing = sorted(registered - covered_keys())
    assert not missing, ("no test is marked @pytest.mark.covers(...) for: " + ", ".join(missing))


def test_covers_marks_name_registered_keys():
    catalog = bundled_catalog()
    registered = {*catalog.triggers, *catalog.actions, *catalog.searches}
    unknown = sorted(covered_keys() - registered)
    assert not unknown, f"covers() names keys nothing registers: {unknown}"
