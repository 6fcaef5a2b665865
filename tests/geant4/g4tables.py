"""``python -m tests.geant4.g4tables SCENE``: Geant4's own RINDEX and GROUPVEL of each scene
material (built by engine.geant4.detector) at every wavelength of skydeck's 1 nm grid, as
JSON on stdout. A process of its own: importing Geant4 changes the environment."""

from __future__ import annotations

import json
import sys

from engine.geant4 import detector, runtime
from engine.propagate.scene import HC_EV_NM, WL_GRID, load_scene


def main(argv: list[str]) -> int:
    g4 = runtime.load()
    scene = load_scene(argv[0])
    keep: list[object] = []
    out = {}
    with runtime.quiet(None):
        for i, m in enumerate(scene.materials):
            mpt = detector.material(g4, scene, i, keep).GetMaterialPropertiesTable()
            rindex, groupvel = mpt.GetProperty("RINDEX"), mpt.GetProperty("GROUPVEL")
            energies = [HC_EV_NM / float(nm) * g4.eV for nm in WL_GRID]
            out[m.name] = {
                "rindex": [rindex.Value(e) for e in energies],
                "groupvel": [groupvel.Value(e) / (g4.mm / g4.ns) for e in energies],
            }
    print(json.dumps({"version": runtime.version(g4), "materials": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
