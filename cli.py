"""`python cli.py ...` behaves exactly like the installed `mcls ...` command."""
from mcls.cli import run

if __name__ == '__main__':
    run()
