"""Load the catalog YAML (or the built-in default) into the domain's Catalog."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from demanager.domain.catalog import Catalog, CatalogError


def load_catalog(path: Path | None) -> Catalog:
    if path is None:
        text = resources.files("demanager").joinpath("default_catalog.yaml").read_text("utf-8")
        source = "built-in catalog"
    else:
        text = path.read_text(encoding="utf-8")
        source = str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a mapping with profiles and flavors")
    try:
        return Catalog.from_mapping(data)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from exc
