"""``python -m taskreport``: the same as the ``taskreport`` command."""

from .cli import main

main()
