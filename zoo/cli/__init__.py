"""The command-line programs (console scripts of the installed package).

`zoo-train` is `zoo.cli.train:main`; `python train.py` in a checkout calls the same function.
"""
