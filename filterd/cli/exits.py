"""filterctl's exit codes, and the text every --help ends with."""

from __future__ import annotations

EXIT_OK, EXIT_DROP, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
"""stdout closed early (`filterctl export | head -1`): 128 + SIGPIPE, what a shell
reports for a program ended by a closed pipe; nothing is printed."""

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success (check: the message would be delivered)
  {EXIT_DROP}    check: the message would be dropped (or deferred)
  {EXIT_USAGE}    bad usage or bad input (an invalid address: nothing is written)
  {EXIT_UNAVAILABLE}    the registry is unreachable
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_PIPE}  stdout was closed before all of the output was written (e.g. by
       `| head`): the rest is dropped without a message, as a shell reports a
       program ended by SIGPIPE
"""
