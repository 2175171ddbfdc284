"""`filterd`: the daemon (`serve`) and `check-config`.

- `entry`: the command line and the environment; `serve`: the composition root of
  the long-running process; `frontends`: each front end's listen, serve, drain;
  `workers`: worker processes; `shared_metrics`: /metrics across workers;
  `reload`: SIGHUP; `live`: what a serving process holds.
"""

from filterd.daemon.entry import main

__all__ = ["main"]
