"""`python -m behaviorlm COMMAND ...`: the `behaviorlm` console script (behaviorlm/cli.py)."""

from behaviorlm.cli import main

main()
