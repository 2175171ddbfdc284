"""`python -m filterd ...` is `filterd ...` (used to start worker processes)."""

from filterd.daemon import main

main()
