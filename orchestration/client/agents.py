"""The one seam through which the core reaches the agents layer: the client loads the
process's agent registry as its :class:`~orchestration.definition.catalog.Catalog`."""

from __future__ import annotations

from collections.abc import Iterable

from orchestration.definition.catalog import Catalog


def load_catalog(modules: Iterable[str] = ()) -> Catalog:
    """The process's agent registry, with the built-in agents and ``modules`` imported."""
    # Imported here, not at the top: the agents package imports the core's models.
    from agents.registry import load_agents

    return load_agents(modules)
