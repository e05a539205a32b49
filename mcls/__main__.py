"""`python -m mcls` is the `mcls` command."""
from .cli import run

run()
