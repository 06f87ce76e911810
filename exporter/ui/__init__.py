"""The read-only web view under /ui/: reconciliation lists, one transaction's timeline, queues and
dead letters. Server-rendered (no build step, no CDN: sidecars run without internet)."""

from syncwatch.ui.server import setup_ui

__all__ = ["setup_ui"]
