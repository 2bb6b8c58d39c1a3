"""The SDK is usable without the server's dependencies: importing it loads none of them."""

import json
import subprocess
import sys

SERVER_MODULES = ("starlette", "uvicorn", "duckdb", "sqlalchemy", "msgspec", "redis", "millimetric.api")


def test_the_sdk_imports_no_server_code() -> None:
    code = (
        "import json, sys\n"
        "from millimetric import Client, AsyncClient\n"
        "import millimetric.sdk\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert "millimetric.sdk.client" in loaded
    assert [m for m in loaded if m.startswith(SERVER_MODULES)] == []
