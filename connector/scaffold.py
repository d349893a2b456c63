"""Write a new plugin package: `connector plugin new NAME`.

The package is what docs/plugins.md describes: setup.cfg with the ``connector`` entry point,
one module holding an App, a PollTrigger and an Action, a test file running the standard
suite against a fake of the service, and a README. It installs with ``pip install -e .`` and
its tests pass as generated; the templates are in connector/scaffold_templates.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from .errors import PluginError, UserError

NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 40

#: template -> path in the package (``$module`` is replaced)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "setup.cfg.tmpl": "setup.cfg",
    "README.md.tmpl": "README.md",
    "module.py.tmpl": "${module}.py",
    "test_module.py.tmpl": "tests/test_${module}.py",
}


def names(name: str) -> dict[str, str]:
    """Return the names derived from NAME, or raise UserError saying what a name may be."""
    raw = name.strip()
    short = re.sub(r"^connector[-_](?=.)", "", raw)
    if not NAME.match(short) or len(short) > MAX_NAME:
        raise UserError(f"plugin name {name!r}: expected lowercase letters and digits, words "
                        f"joined by '-' or '_', starting with a letter, up to {MAX_NAME} "
                        "characters (e.g. acme or acme-crm)")
    words = re.split(r"[-_]", short)
    return {"dist": "connector-" + "-".join(words), "module": "connector_" + "_".join(words),
            "app": "_".join(words), "app_dash": "-".join(words),
            "label": " ".join(w.capitalize() for w in words),
            "classname": "".join(w.capitalize() for w in words)}


def _taken(app_key: str) -> str | None:
    """Return the plugin that already registers app ``app_key``, if any is installed."""
    from .config import Settings
    from .registry import build_catalog, make_manager

    settings = Settings.from_env()
    try:
        catalog = build_catalog(make_manager(settings.load_plugins, settings.block_plugins))
    except PluginError:  # a broken installed plugin must not stop a new one being written
        return None
    entry = catalog.apps.get(app_key)
    return entry.plugin if entry else None


def render(template: str, values: dict[str, str]) -> str:
    """Return a template of connector/scaffold_templates with ``$names`` filled in."""
    folder = resources.files("connector").joinpath("scaffold_templates")
    return Template(folder.joinpath(template).read_text()).substitute(values)


def create(name: str, directory: str | Path = ".") -> Path:
    """Write the package for NAME under ``directory``; return its folder."""
    values = names(name)
    owner = _taken(values["app"])
    if owner:
        raise UserError(f"plugin name {name!r}: app key {values['app']!r} is already "
                        f"registered by plugin {owner}; choose another name")
    target = Path(directory) / values["dist"]
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists; remove it or choose another --dir")
    files = {Template(path).substitute(values): render(template, values)
             for template, path in FILES.items()}
    try:
        for path, text in files.items():
            out = target / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
