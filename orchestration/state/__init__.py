"""The state room: every Redis key (``keys``), the typed Lua contract (``scripts`` and
``lua/``), and the reads and atomic writes built on them (``store``, ``reads``, ``maps``,
``limiter``, ``timers``, ``index``, ``pubsub``, ``definitions``). Nothing here sends a
Celery message; the messages a script pushes are built by the flow room above."""
