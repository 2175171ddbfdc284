"""`filterctl`, the registry admin CLI.

- `main`: the entry point (and the environment); `parsing`: the command line;
  `commands`: an invocation and the table of commands; `importing`: CSV import;
  `render`: facts and audit entries as JSON and text; `exits`: the exit codes.
"""

from filterd.cli.main import main

__all__ = ["main"]
