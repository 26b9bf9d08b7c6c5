"""The command-line programs (console scripts of the installed package).

`zoo-train` is `zoo.cli.train:main`; `python train.py` in a checkout calls the same function.
"""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one `error:` line (exit code 2), not a usage block."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")
