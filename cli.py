"""Thin entry point: `python cli.py ...` works without installing featpipe."""

from featpipe.cli import main

if __name__ == "__main__":
    main()
