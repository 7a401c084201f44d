"""``python -m nexus_cli``: the same as the ``nexus-policy`` command."""

from nexus_cli import main

main()
