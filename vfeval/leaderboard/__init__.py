"""The leaderboard: result records (``leaderboard/results/*.json``) and the static site built from them.

- ``records``: loading records (validated by ``vfeval.results``, the schema's owner), what ranks together,
  and the values shown (family and backend read from each record).
- ``build``: the static site (HTML, CSS, a little JS, inline SVG plots); needs no server.
- ``plots``: the SVG plots (matplotlib, Agg).

Nothing here is imported by ``vfeval --help``: the CLI imports it inside the ``leaderboard`` commands.
"""
