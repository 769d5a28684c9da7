"""``baton dashboard``: workflows (not tasks) on a web page, read from the same Redis state.

``views`` builds the documents, ``prometheus`` renders ``/metrics``, ``server`` serves them.
"""

from workers.dashboard.prometheus import render_metrics
from workers.dashboard.server import make_app, serve
from workers.dashboard.views import DashboardReader, workflow_summary

__all__ = ["DashboardReader", "make_app", "render_metrics", "serve", "workflow_summary"]
