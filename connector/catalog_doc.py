"""Render the catalog (every app, trigger, action and search) as Markdown, from the registry.

``connector plugins --markdown > docs/catalog.md`` writes the committed catalog; a test fails
when the two disagree, so the docs cannot drift from the code. Where a service's document
is vague, the decision lives in the plugin module's docstring, which is quoted here.
"""
from __future__ import annotations

import inspect
import json
import sys

from .registry import Catalog, describe_schema

HEADER = """# Catalog

Every app, trigger, action and search the bundled plugins register, generated from the
registry by `python -m connector.catalog_doc > docs/catalog.md` (a test fails when this file
and the registry disagree; edit the plugins, not this file; `connector plugins --markdown`
prints the same page for whatever is installed). Inputs come from each class's
marshmallow schema. Where a service's document is vague, the plugin module's docstring
records the decision taken, and it is quoted under each app. The offline emulators of the
services are described in [sandbox.md](sandbox.md); how calls are retried and kept
idempotent in [reliability.md](reliability.md).
"""


def _doc(obj) -> str:
    """Return an object's own docstring (not an inherited one), dedented."""
    raw = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(raw) if raw else ""


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inputs_table(schema_cls) -> list[str]:
    rows = describe_schema(schema_cls)
    if not rows:
        return ["No inputs.", ""]
    lines = ["| input | type | required | help |", "|---|---|---|---|"]
    for row in rows:
        notes = [row["help"].rstrip(".") + "." if row["help"] else ""]
        if row.get("choices"):
            notes.append("One of " + ", ".join(f"`{c}`" for c in row["choices"]) + ".")
        if row.get("choices_from"):
            notes.append(f"Choices from search `{row['choices_from']}`.")
        if row["secret"]:
            notes.append("Secret.")
        lines.append(f"| `{row['name']}` | {row['type']} | {'yes' if row['required'] else 'no'} "
                     f"| {_cell(' '.join(n for n in notes if n))} |")
    return lines + [""]


def _component(entry, kind_label: str) -> list[str]:
    cls = entry.cls
    extra = f", {cls.kind}" if entry.kind == "trigger" else ""
    lines = [f"#### `{entry.key}` ({kind_label}{extra})", "",
             f"**{cls.label}**: {cls.help}" if cls.help else f"**{cls.label}**", ""]
    notes = _doc(cls)
    if notes:
        lines += [notes, ""]
    lines += [f"Registered by plugin `{entry.plugin}`.", ""]
    lines += _inputs_table(cls.Inputs)
    if cls.sample:
        lines += ["Sample output:" if entry.kind != "trigger" else "Sample item:", "",
                  "```json", json.dumps(cls.sample, indent=2, sort_keys=True), "```", ""]
    return lines


def render_markdown(catalog: Catalog) -> str:
    """Return the whole catalog page."""
    lines = [HEADER]
    for app_key in sorted(catalog.apps):
        entry = catalog.apps[app_key]
        app = entry.cls
        lines += [f"## {app.label} (`{app_key}`)", "", app.help, ""]
        module_doc = _doc(sys.modules[app.__module__])
        if module_doc:
            lines += [module_doc, ""]
        base = f"`{app.base_url}`" if app.base_url else "none: every connection gives its own"
        lines += [f"Registered by plugin `{entry.plugin}`. Default base URL: {base}.", "",
                  "Connection credentials:", ""]
        lines += _inputs_table(app.Credentials)
        for title, table, label in (("Triggers", catalog.triggers, "trigger"),
                                    ("Actions", catalog.actions, "action"),
                                    ("Searches", catalog.searches, "search")):
            mine = [table[k] for k in sorted(table) if table[k].cls.app == app_key]
            if not mine:
                continue
            lines += [f"### {title}", ""]
            seen_modules: set[str] = set()
            for item in mine:
                module = item.module or item.cls.__module__  # the plugin, not the submodule of a class
                if module not in seen_modules:
                    seen_modules.add(module)
                    doc = _doc(sys.modules[module])
                    if doc:
                        lines += [f"From `{module}`:", "", doc, ""]
                lines += _component(item, label)
    return "\n".join(lines).rstrip() + "\n"


def bundled_markdown() -> str:
    """Return the catalog page of the bundled plugins only (what docs/catalog.md holds)."""
    from importlib import metadata

    from .registry import build_catalog, make_manager

    bundled = [ep.name for ep in metadata.entry_points(group="connector")
               if ep.value.startswith("connector.")]
    return render_markdown(build_catalog(make_manager(load=bundled)))


if __name__ == "__main__":  # python -m connector.catalog_doc > docs/catalog.md
    print(bundled_markdown(), end="")
