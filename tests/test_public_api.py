import subprocess
import sys

import edgecache


def test_public_names_are_exported_sorted():
    assert edgecache.__all__ == sorted(edgecache.__all__)
    for name in edgecache.__all__:
        assert hasattr(edgecache, name), name


def test_import_connects_to_nothing():
    # A fresh interpreter imports edgecache with no Redis reachable and no network.
    code = "import socket\nsocket.socket.connect = None\nimport edgecache, edgecache.middleware\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
