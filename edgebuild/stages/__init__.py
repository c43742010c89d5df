"""The build stages, one module each, run in order by ``edgebuild.pipeline``.

Each module has ``run(ctx) -> StageResult``: it reads and writes the BuildContext and
returns a one-line summary (or why it was skipped). The stages whose results the stage
cache keeps also have ``cache_parts``, ``save`` and ``restore`` (``pipeline.CachedStage``).
"""
