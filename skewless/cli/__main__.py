"""``python -m skewless.cli``: the same as the ``skewless`` command."""

from skewless.cli import main

main()
