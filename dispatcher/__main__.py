"""`python -m dispatcher` is the `pushpool` command."""

from .cli import main

main()
