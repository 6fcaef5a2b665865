"""skydeck's Textual operations console (`skydeck`); talks to the engine only through its API."""
