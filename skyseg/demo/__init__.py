"""The synthetic demo: seeded, labelled HDR sky panoramas drawn from scratch.

``synthetic`` is ``skyseg demo-data``; ``scenes`` draws outdoor scenes and ``rooms`` indoor ones.
The real demo (panoramas shipped in ``skyseg/resources/demo``) needs no code here.
"""

from skyseg.demo.synthetic import make_demo_data

__all__ = ['make_demo_data']
