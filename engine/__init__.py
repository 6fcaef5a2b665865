"""skydeck engine: the headless half of skydeck.

Everything here runs without a terminal UI: the CLI (`skydeck-engine`), the event
builder, propagation, the pipeline and the watch daemon. The console imports this
package; this package never imports Textual (tests/test_headless.py proves it).
"""

__version__ = "0.1.0"
