"""Subcommands of the ``mask2former`` command line (see :mod:`mask2former.cli`)."""
