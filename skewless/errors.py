"""The errors Skewless raises on purpose; the CLI prints them without a traceback."""


class SkewlessError(RuntimeError):
    """A failure whose message says what is wrong and what to look at."""
