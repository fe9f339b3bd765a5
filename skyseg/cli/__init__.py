"""The ``skyseg`` command on top of every stage.

``commands`` (``main``: one sub-command per stage), ``pipeline`` (``skyseg pipeline``, what
``run_pipeline.sh`` runs) and ``config`` (its YAML configuration).
"""

from skyseg.cli.commands import STAGES, build_parser, exit_status, main, stage_main

__all__ = ['main', 'build_parser', 'exit_status', 'stage_main', 'STAGES']
