"""Geant4 as skydeck's physics reference and genstep source (docs/geant4.md).

Why: physicists trust the propagator only as far as it agrees with Geant4, and at a real
detector the gensteps a delivery carries come from a Geant4 simulation of charged tracks.
This package drives Geant4 (the ``geant4`` extra: geant4-pybind, one wheel with Geant4
11.4 inside) on a skydeck scene:

- ``runtime``: importing Geant4 offline (no data sets needed for optical physics; the EM
  processes that need G4EMLOW removed when it is missing) with its chatter kept off stdout;
- ``detector``: the scene as Geant4 geometry, materials and optical surfaces;
- ``physics``: the physics lists (optical only; EM + optical);
- ``record``: Geant4's photon histories as skydeck flags and a skydeck event directory;
- ``run``: the two runs users and tests make, Geant4 tracking a scene's torch photons
  (``skydeck-engine geant4 propagate``) and a particle gun whose Cerenkov and scintillation
  steps become gensteps (``skydeck-engine geant4 gensteps``).

geant4_pybind is imported only inside ``runtime.load``, so nothing else in the engine pays
for (or depends on) it; every Geant4 run is its own process (Geant4's run manager is a
singleton).
"""
