"""The event builder: match timestamps across level-0 sources, select, copy payload rows, verify (MPI-aware)."""
