"""schemathesis against a live uvicorn server: the API answers as its OpenAPI document says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ServerFactory

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def test_the_live_api_conforms_to_its_openapi_document(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        pytest.skip("schemathesis is not installed (requirements-dev.txt)")
    # Room for every example in the line: a 429 is documented, but the point is the answers.
    # Metrics on (the prometheus extra is installed in development): their 200 is checked too.
    server = start_server(
        GUEST_MAX_QUEUE_SIZE="500", GUEST_MAX_CONCURRENT_REQUESTS="10", GUEST_METRICS_ENABLED="true"
    )
    # Bounded and seeded: the same few hundred requests every run, done in seconds.
    command = [str(cli), "run", f"{server.url}/api/v1/guest/openapi.json", "--checks", CHECKS]
    command += ["--max-examples", "20", "--seed", "1", "--workers", "1"]
    command += ["--request-timeout", "10", "--no-color"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: 9" in result.stdout, result.stdout[-3000:]
