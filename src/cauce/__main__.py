"""`python -m cauce` runs the CLI."""

from cauce.cli import main

main()
