"""Detector geometry for propagation: GDML volumes, solids and surfaces, and the flat
arrays (volume tree, CSG solids, a bounding volume hierarchy) that both backends trace.

Why a package: a scene used to be a box of disjoint boxes and spheres intersected one by
one; a real detector is a tree of placed volumes with boolean solids, read from Geant4's
GDML. ``units`` evaluates GDML's unit expressions without eval; ``gdml`` reads a GDML file
(defusedxml, bounded) into a ``Detector``; ``solids`` turns each solid into a CSG tree of
convex leaves; ``flatten`` places every volume in world coordinates and lays out the
arrays (and turns a TOML scene into the same tree); ``bvh`` builds the hierarchy;
``trace`` (Numba) is the CPU traversal that ``assets/kernels/propagate.cu`` mirrors;
``check`` finds overlaps the way Geant4's CheckOverlaps does (docs/propagation.md,
"Geometry").
"""
