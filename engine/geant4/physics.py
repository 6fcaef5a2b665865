"""Geant4 physics lists for skydeck's runs (docs/geant4.md, "Physics").

- ``optical``: G4OpticalPhysics only, for optical photons shot into the scene (the A/B
  reference). e-, e+ and gamma are constructed as well: the scintillation set-up needs
  them (without, G4OpticalPhysics aborts on "e- without a process manager").
- ``em_optical``: G4EmStandardPhysics and G4OpticalPhysics, for charged tracks that make
  Cerenkov and scintillation light. Without the G4EMLOW data set (offline) the three EM
  processes that read it are removed: electron and positron bremsstrahlung ("eBrem"), the
  photoelectric effect ("phot") and Rayleigh scattering of gammas ("Rayl"). That keeps
  ionisation (with delta rays), multiple scattering, muon bremsstrahlung and pair
  production, Compton scattering, pair conversion and annihilation; it approximates: an
  electron loses no energy to bremsstrahlung (its range and light yield come out slightly
  high above a few tens of MeV, where radiation matters), and a gamma is never
  photo-absorbed (it Compton scatters down until it leaves, depositing somewhat less
  energy below ~100 keV). Muon Cerenkov light, the genstep source of a water detector, is
  not affected. With the data set every process stays.

Settings applied by ``commands``: Cerenkov at most 100 photons and 10 % beta change per
step (JUNO's and Opticks' choice), sensitive detectors invoked on optical detection, and
(after initialisation) Geant4 11.4's scintillation process taken off optical photons: it
re-times every optical step with the previous medium's velocity (docs/geant4.md).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

REMOVED_OFFLINE = {"e-": ("eBrem",), "e+": ("eBrem",), "gamma": ("phot", "Rayl")}
BEFORE_INIT = (
    "/process/optical/cerenkov/setMaxPhotons 100",
    "/process/optical/cerenkov/setMaxBetaChange 10",
    "/process/optical/boundary/setInvokeSD true",
    "/process/optical/cerenkov/setTrackSecondariesFirst false",
    "/process/optical/scintillation/setTrackSecondariesFirst false",
)
AFTER_INIT = ("/process/inactivate Scintillation opticalphoton",)


def make_list(g4: ModuleType, kind: str, full_em: bool) -> Any:
    """A physics list instance: ``optical`` or ``em_optical``."""

    class SkydeckPhysics(g4.G4VModularPhysicsList):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.SetVerboseLevel(0)
            self.removed: list[str] = []
            if kind == "em_optical":
                self.RegisterPhysics(g4.G4EmStandardPhysics())
                # "phot" as its own process, so it can be removed
                g4.G4EmParameters.Instance().SetGeneralProcessActive(False)
            self.RegisterPhysics(g4.G4OpticalPhysics())

        def ConstructParticle(self) -> None:
            super().ConstructParticle()
            g4.G4Electron.Definition()
            g4.G4Positron.Definition()
            g4.G4Gamma.Definition()
            g4.G4OpticalPhoton.Definition()

        def ConstructProcess(self) -> None:
            super().ConstructProcess()
            if kind != "em_optical" or full_em:
                return
            table = g4.G4ParticleTable.GetParticleTable()
            for particle, names in REMOVED_OFFLINE.items():
                pm = table.FindParticle(particle).GetProcessManager()
                for proc in list(pm.GetProcessList()):
                    if proc.GetProcessName() in names:
                        pm.RemoveProcess(proc)
                        self.removed.append(f"{particle}:{proc.GetProcessName()}")

    return SkydeckPhysics()


def commands(g4: ModuleType, lines: tuple[str, ...]) -> None:
    ui = g4.G4UImanager.GetUIpointer()
    for line in lines:
        ui.ApplyCommand(line)
