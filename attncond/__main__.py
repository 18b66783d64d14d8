"""``python -m attncond COMMAND …``: the same as the ``attncond`` console script.

Runs :func:`attncond.cli.entry` (``pyproject.toml`` ``[project.scripts]``): the same parser, the
same one-line errors and exit statuses (0 success, 1 a reported failure, 2 a usage error, 130
interrupted).
"""

from __future__ import annotations

from attncond.cli import entry

if __name__ == "__main__":
    entry()
