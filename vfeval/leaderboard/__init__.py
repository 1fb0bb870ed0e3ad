"""The leaderboard: result records (``leaderboard/results/*.json``) and the static site built from them.

- ``records``: the ``vfeval.result/1`` validator, loading, pipeline families and what may be ranked together.
- ``build``: the static site (HTML, CSS, a little JS, inline SVG plots); needs no server.
- ``plots``: the SVG plots (matplotlib, Agg).

Nothing here is imported by ``vfeval --help``: the CLI imports it inside the ``leaderboard`` commands.
"""
