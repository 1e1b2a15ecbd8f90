"""`python -m experiments.collect SWEEP_DIR [--key K] [--reference V]`: the checkout's name for `behaviorlm collect`
(behaviorlm/collect.py), which the make targets and the reproduction scripts call."""

import sys

from behaviorlm.collect import main

if __name__ == "__main__":
    main(sys.argv[1:])
