#!/bin/sh
# How tests/store/data/workspace-v1.tar.gz was made: a workspace written by the code of
# main before the store had migrations (commit 8535996, schema version 1), packed with the
# listings that code printed for it (expected-v1.json). Run from the repository root with
# the project's .venv; it leaves the tarball in tests/store/data/.
set -eu
SRC=/tmp/v1src
WS=/tmp/skydeck-v1/ws
PY="$PWD/.venv/bin/python"
git worktree add "$SRC" 8535996
rm -rf /tmp/skydeck-v1
e() { PYTHONPATH="$SRC" PATH="$PWD/.venv/bin:$PATH" "$PY" -m engine -w "$WS" "$@"; }
e init >/dev/null
# one downlink run to SUCCESS (two chunks, two runs), a second run and its cleanup rolled
# back, so its stream is WAITING and a retired instance (is_latest = 0) exists
e mock --downlink 251120001 --events 50 --event-bytes 400 --chunks 2 --runs 2 --sources 2 >/dev/null
e run 251120001 >/dev/null
e mock --downlink 251120002 --events 40 --event-bytes 300 --chunks 1 --runs 1 --sources 2 --seed 3 >/dev/null
e run 251120002 >/dev/null
e rollback 251120002 cleanup >/dev/null
e downlinks --json > /tmp/skydeck-v1/downlinks.json
e streams --all --json > /tmp/skydeck-v1/streams.json
(cd "$SRC" && PYTHONPATH="$SRC" "$PY" - "$WS") <<'PYEOF'
import dataclasses, json, sys
from pathlib import Path
from engine.state import StateDB
ws = Path(sys.argv[1])
with StateDB(ws / "state.db") as db:
    files = [dataclasses.asdict(f) for f in db.files()]
    schema = db.conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
out = {"schema": int(schema), "files": files,
       "downlinks": json.loads(Path("/tmp/skydeck-v1/downlinks.json").read_text()),
       "streams": json.loads(Path("/tmp/skydeck-v1/streams.json").read_text())}
(ws / "expected-v1.json").write_text(json.dumps(out, indent=1) + "\n")
# what the test needs: the database, the config and the files the database lists
keep = ["state.db", "skydeck.toml", "expected-v1.json"]
keep += [str(Path(f["path"]).relative_to(ws)) for f in files]
(ws.parent / "keep.txt").write_text("\n".join(keep) + "\n")
PYEOF
tar -czf "$PWD/tests/store/data/workspace-v1.tar.gz" -C "$WS" -T /tmp/skydeck-v1/keep.txt
git worktree remove --force "$SRC"
rm -rf /tmp/skydeck-v1
