"""The synthetic demo: seeded, labelled HDR sky panoramas drawn from scratch.

``synthetic`` is ``skyseg demo-data``; ``scenes`` makes and draws outdoor scenes and
``rooms`` indoor ones, both from the primitives of ``geometry`` (directions, polygons on
the panorama's cylinder, coverage) and ``painting`` (sky colour, noise, polygons), into a
``records.DemoScene``. The real demo (panoramas shipped in ``skyseg/resources/demo``) needs
no code here.
"""

from skyseg.demo.synthetic import DemoOptions, make_demo_data

__all__ = ['make_demo_data', 'DemoOptions']
