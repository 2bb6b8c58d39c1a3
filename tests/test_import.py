"""`millimetric import`: NDJSON backfills through the API's own validation, enrichment and writer."""

import json
import subprocess
import sys

import httpx

from conftest import bearer, cli, cli_project

RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
LINES = [
    json.dumps(
        {
            "event": "signup",
            "event_id": "ok-1",
            "timestamp": "2024-01-02T00:00:00Z",
            "anonymous_id": "a1",
            "url": "https://shop.example.com/?utm_source=google&utm_medium=cpc",
            "context": {"ip": "8.8.8.8", "user_agent": CHROME},
        }
    ),
    json.dumps({"event": ""}),  # fails decoding
    "not json at all",
    "",  # blank lines are skipped
    json.dumps({"event": "x", "event_id": "late", "timestamp": "2999-01-01T00:00:00Z"}),  # fails the API's checks
    json.dumps({"event": "$secret"}),
    json.dumps(
        {
            "event": "purchase",
            "event_id": "ok-2",
            "timestamp": "2024-01-03T00:00:00+01:00",
            "properties": {"amount": 10},
        }
    ),
    json.dumps(
        {
            "event": "bot",
            "event_id": "bot",
            "timestamp": "2024-01-03T00:00:00Z",
            "context": {"user_agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"},
        }
    ),
    json.dumps({"event": "huge", "path": "/" + "x" * 2000, "properties": {"k": "v" * 70_000}}),  # over 64 KiB
]


def run_import(data_dir, *args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "millimetric", "import", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        input=stdin,
    )


def test_import_stores_valid_lines_and_reports_rejected_ones(tmp_path, server_factory):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    source = tmp_path / "backfill.ndjson"
    source.write_text("\n".join(LINES) + "\n")
    result = run_import(data_dir, str(source), "--project", "shop", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rejects = tmp_path / "backfill.ndjson.rejected.ndjson"
    assert summary == {"lines": 8, "stored": 2, "dropped": {"bot": 1}, "rejected": 5, "rejects_file": str(rejects)}
    assert "stored 2" in result.stderr and "rejected 5" in result.stderr
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["error"]) for r in rejected] == [
        (2, "invalid_payload"),
        (3, "invalid_payload"),
        (9, "payload_too_large"),
        (5, "invalid_payload"),
        (6, "invalid_payload"),
    ]  # decoding failures are reported as read, the API's checks per batch
    assert [r["input"] for r in rejected] == [LINES[1], LINES[2], LINES[8], LINES[4], LINES[5]]
    assert rejected[3]["details"]["fieldErrors"] == {"timestamp": ["More than 1 hour in the future"]}
    assert list(rejected[4]["details"]["fieldErrors"]) == ["event"]

    server = server_factory(data_dir)
    rows = httpx.get(f"{server.url}/v1/query", params=RANGE, headers=bearer(keys.rk)).json()["rows"]
    assert [r["event_id"] for r in rows] == ["ok-2", "ok-1"]  # newest first: 2024-01-02T23:00Z, then 00:00Z
    signup = rows[1]  # enriched from its `context`, as an sk_ sender's event would be
    assert (signup["source"], signup["medium"], signup["country"], signup["browser"]) == (
        "google",
        "paid",
        "US",
        "chrome",
    )


def test_import_reads_stdin_and_hands_its_rows_to_a_running_server(tmp_path, server_factory):
    """While `millimetric serve` owns the data directory, import gives it the rows: live ingest
    goes on, and the server reads the imported events at once."""
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    lines = "".join(json.dumps({"event": "x", "timestamp": f"2024-01-02T00:00:{i:02d}Z"}) + "\n" for i in range(60))
    result = run_import(data_dir, "-", "--project", "shop", "--json", stdin=lines * 50)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "lines": 3000,
        "stored": 3000,
        "dropped": {},
        "rejected": 0,
        "rejects_file": None,
    }
    server = server_factory(data_dir)
    live = httpx.post(
        f"{server.url}/v1/track", json={"event": "live", "timestamp": "2024-01-02T00:01:00Z"}, headers=bearer(keys.sk)
    )
    assert live.status_code == 202
    result = run_import(data_dir, "-", "--project", "shop", "--json", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stored"] == 60
    stats = httpx.get(
        f"{server.url}/v1/stats",
        params={"from": "2024-01-01", "to": "2024-01-03", "group_by": "event_name"},
        headers=bearer(keys.rk),
    )
    assert stats.json()["rows"] == [{"event_name": "x", "value": 3060}, {"event_name": "live", "value": 1}]
    assert httpx.post(f"{server.url}/v1/track", json={"event": "live"}, headers=bearer(keys.sk)).status_code == 202
    server.stop()


def test_import_needs_a_known_project(tmp_path):
    source = tmp_path / "x.ndjson"
    source.write_text("{}\n")
    cli("projects", "list", data_dir=tmp_path / "data")
    result = run_import(tmp_path / "data", str(source), "--project", "nope")
    assert result.returncode == 1 and "No project 'nope'" in result.stderr
