"""What skyseg ships besides code: ImageNet encoder weights, the default sky model and the
bundled real demo panoramas (data files only)."""

from pathlib import Path

__all__ = ["RESOURCES"]

#: The folder of the shipped files.
RESOURCES = Path(__file__).resolve().parent
