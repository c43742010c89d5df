"""The build stages, one module each, run in order by ``edgebuild.pipeline``.

Each module has ``run(ctx) -> str``: it reads and writes the BuildContext and returns
a one-line summary (or why it was skipped).
"""
