"""Train a zoo model and export it: `python train.py --help`.

The command lives in the installed package (`zoo.cli.train`, also installed as
`zoo-train`); this file keeps `python train.py ...` working in a checkout.
"""

import sys

from zoo.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
