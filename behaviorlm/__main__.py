"""`python -m behaviorlm train|predict|evaluate|dashboard ...`: the `behaviorlm` console script."""

from behaviorlm.cli import main

main()
