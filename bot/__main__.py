"""``python -m bot`` is the ``certportal`` command."""

from bot.cli import main

main()
