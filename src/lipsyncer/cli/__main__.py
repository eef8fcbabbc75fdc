"""``python -m lipsyncer.cli``: the same command as the ``lipsyncer`` script."""

from . import main

main()
