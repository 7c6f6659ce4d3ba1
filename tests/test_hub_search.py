"""`llmcli models search`, `llmcli models outdated` and `llmcli pull NAME --update` against the real
local hub (tests/hub_server.py): real CLI subprocesses, real huggingface_hub requests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import run_cli
from hub_server import (CLASSIFIER_REPO, GGUF_REPO, HF_REPO, OTHER_GGUF_REPO, PRIVATE_REPO, PRIVATE_TOKEN,
                        HubFile, HubRepo, fake_gguf, hub, hub_server)  # noqa: F401 - fixtures
from llmcli.store.modelstore import ModelStore

Q8 = "tiny-Q8_0.gguf"


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(name: str):
    return ModelStore().snapshot().models[name]


@pytest.fixture
def moving(hub):
    """A repository of its own (the session hub is shared), whose branches tests may advance."""
    files = {n: HubFile(n, None, fake_gguf(n.encode())) for n in (Q8, "tiny-Q4_K_M.gguf")}
    files["README.md"] = HubFile("README.md", None, b"# moving\n")
    repo = hub.add(HubRepo(f"TestOrg/moving-{uuid.uuid4().hex[:8]}-GGUF", files,
                           {"main": uuid.uuid4().hex + "0" * 8, "v1": "c" * 40}))
    yield repo
    hub.state.repos.pop(repo.repo_id, None)


def lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.strip()]


# ---------------------------------------------------------------- search

def test_search_table_sorted_by_downloads_text_generation_only(hub):
    r = run_cli("models", "search", "SMOL")
    assert r.returncode == 0, r.stderr
    rows = lines(r.stdout)
    assert rows[0].split() == ["NAME", "DOWNLOADS", "LIKES", "FORMATS", "QUANTS"]
    # the HF repo has more downloads; the classifier (text-classification) matches "smol" but is left out
    assert [row.split()[0] for row in rows[1:]] == [HF_REPO, GGUF_REPO]
    assert rows[1].split()[1:4] == ["9K", "120", "safetensors"]
    assert rows[2].split()[1:4] == ["5K", "40", "gguf"] and "Q4_K_M, Q4_0, Q6_K, Q8_0" in rows[2]
    assert CLASSIFIER_REPO not in r.stdout and PRIVATE_REPO not in r.stdout
    (query,) = hub.state.list_queries
    assert query["search"] == ["SMOL"] and query["pipeline_tag"] == ["text-generation"]
    assert query["sort"] == ["downloads"] and query["limit"] == ["20"] and "siblings" in query["expand"]


def test_search_gguf_json_and_limit(hub):
    r = run_cli("models", "search", "smol", "--gguf", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"name": GGUF_REPO, "downloads": 5000, "likes": 40, "formats": ["gguf"],
                                     "quants": ["Q4_K_M", "Q4_0", "Q6_K", "Q8_0"], "library": "gguf",
                                     "gated": False}]
    assert hub.state.list_queries[-1]["filter"] == ["gguf"]
    r = run_cli("models", "search", "", "--gguf", "--limit", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert [h["name"] for h in json.loads(r.stdout)] == [GGUF_REPO, OTHER_GGUF_REPO]
    r = run_cli("models", "search", "no-such-model-anywhere")
    assert r.returncode == 0 and r.stdout == "" and "no text-generation models match" in r.stderr


def test_search_token_from_option_and_hf_token(hub):
    assert PRIVATE_REPO not in run_cli("models", "search", "private").stdout
    r = run_cli("models", "search", "private", "--token", PRIVATE_TOKEN)
    assert r.returncode == 0 and PRIVATE_REPO in r.stdout, r.stderr
    r = run_cli("models", "search", "private", env={"HF_TOKEN": PRIVATE_TOKEN})
    assert r.returncode == 0 and PRIVATE_REPO in r.stdout, r.stderr
    assert hub.state.requests(contains="/api/models?")[-1]["auth"] == f"Bearer {PRIVATE_TOKEN}"


# ---------------------------------------------------------------- outdated + update

def test_outdated_then_update_switches_record_and_frees_old_files(hub, moving):
    repo = moving.repo_id
    assert run_cli("pull", f"{repo}:Q8_0", "--as", "m").returncode == 0
    assert run_cli("pull", f"{repo}:Q4_K_M", "--revision", "v1", "--as", "pinned").returncode == 0
    r = run_cli("models", "outdated")
    assert r.returncode == 0 and r.stdout == "" and "all 2 pulled model(s) are up to date" in r.stderr
    assert json.loads(run_cli("models", "outdated", "--json").stdout) == []
    hub.state.reset()
    r = run_cli("pull", "m", "--update")
    assert r.returncode == 0 and "m is up to date" in r.stderr and not hub.state.requests(contains="/cdn/")

    old = record("m")
    new_bytes = fake_gguf(b"retrained")
    new_commit = moving.advance("main", {Q8: new_bytes})
    r = run_cli("models", "outdated")
    assert r.returncode == 0, r.stderr
    rows = lines(r.stdout)
    assert len(rows) == 2 and rows[1].split()[:3] == ["m", repo, "main"]
    assert f"{old.commit[:12]} → {new_commit[:12]}" in rows[1]
    assert "1 of 2 pulled model(s) outdated" in r.stderr
    r = run_cli("models", "outdated", "--json")
    assert json.loads(r.stdout) == [{"name": "m", "repo": repo, "revision": "main", "pinned": old.commit,
                                     "current": new_commit}]

    r = run_cli("pull", "m", "--update", "--dry-run")
    assert r.returncode == 0 and new_commit[:12] in r.stdout and record("m") == old

    r = run_cli("pull", "m", "--update")
    assert r.returncode == 0, r.stderr
    assert f"{old.commit[:12]} → {new_commit[:12]}" in r.stderr
    new = record("m")
    assert (new.commit, new.revision, new.quant, new.spec) == (new_commit, "main", "Q8_0", old.spec)
    assert new.added == old.added and Path(new.path).parent.name == new_commit
    assert sha256(new.path) == hashlib.sha256(new_bytes).hexdigest() == new.files[0].sha256
    assert not os.path.lexists(old.path)  # the old snapshot's file is freed after the switch
    assert record("pinned").commit == "c" * 40
    assert run_cli("models", "verify", "m").returncode == 0

    hub.state.reset()
    r = run_cli("pull", "m", "--update", "--json")
    assert r.returncode == 0 and "up to date" in r.stderr and json.loads(r.stdout)["commit"] == new_commit
    assert not hub.state.requests(contains="/cdn/")
    assert "all 2 pulled model(s) are up to date" in run_cli("models", "outdated").stderr


def test_failed_update_keeps_old_record_and_files(hub, moving):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    old = record("m")
    moving.advance("main", {Q8: fake_gguf(b"v2")})
    hub.state.corrupt.add(Q8)  # the new file arrives damaged
    r = run_cli("pull", "m", "--update")
    assert r.returncode == 1 and "corrupt" in r.stderr and "nothing was registered" in r.stderr
    assert record("m") == old and sha256(old.path) == old.files[0].sha256


def test_update_killed_half_way_keeps_old_record_and_files(hub, moving):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    old = record("m")
    # larger than huggingface_hub's 10 MB write chunk, so half of it reaches the .incomplete file
    moving.advance("main", {Q8: fake_gguf(b"v2") + os.urandom(24 << 20)})
    reached, release = hub.state.pause_half(Q8)
    blobs = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + moving.repo_id.replace("/", "--")) / "blobs"
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "pull", "m", "--update"], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert reached.wait(60), "the server never sent half of the new file"
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in blobs.glob("*.incomplete")):
            assert time.monotonic() < deadline, "the client wrote nothing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert record("m") == old and sha256(old.path) == old.files[0].sha256
    r = run_cli("pull", "m", "--update")  # the next update completes
    assert r.returncode == 0, r.stderr
    assert record("m").commit == moving.revisions["main"] and not os.path.lexists(old.path)


def test_update_refuses_to_overwrite_a_record_changed_meanwhile(hub, moving):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    moving.advance("main", {Q8: fake_gguf(b"v2") + os.urandom(24 << 20)})
    reached, release = hub.state.pause_half(Q8)
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "pull", "m", "--update"], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert reached.wait(60), "the server never sent half of the new file"
        r = run_cli("pull", f"{moving.repo_id}:Q4_K_M", "--as", "m")  # another llmcli re-pulls "m" meanwhile
        assert r.returncode == 0, r.stderr
    finally:
        release.set()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "'m' changed in the store during the update" in err.decode()
    assert record("m").quant == "Q4_K_M"  # the other process's record is kept


def test_update_hf_format_model(hub):
    files = {n: HubFile(n, None, d) for n, d in {
        "config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}",
        "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "}.items()}
    repo = hub.add(HubRepo(f"TestOrg/moving-hf-{uuid.uuid4().hex[:8]}", files, library="transformers"))
    try:
        assert run_cli("pull", repo.repo_id, "--as", "hf").returncode == 0
        old = record("hf")
        repo.advance("main", {"config.json": b'{"model_type": "llama", "v": 2}'})
        r = run_cli("pull", "hf", "--update")
        assert r.returncode == 0, r.stderr
        new = record("hf")
        assert new.format == "hf" and new.commit == repo.revisions["main"] and Path(new.path).name == new.commit
        assert (Path(new.path) / "config.json").read_bytes() == b'{"model_type": "llama", "v": 2}'
        assert sorted(f.name for f in new.files) == sorted(f.name for f in old.files)
        assert not os.path.lexists(old.path)
    finally:
        hub.state.repos.pop(repo.repo_id, None)


def test_outdated_reports_unreachable_repo_but_lists_the_rest(hub, moving):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    assert run_cli("pull", f"{GGUF_REPO}:Q4_0", "--as", "smol").returncode == 0
    new = moving.advance("main", {Q8: fake_gguf(b"v2")})
    gone = hub.state.repos.pop(GGUF_REPO)  # deleted from the hub since it was pulled
    try:
        r = run_cli("models", "outdated", "--json")
    finally:
        hub.state.repos[GGUF_REPO] = gone
    assert r.returncode == 1
    assert [x["current"] for x in json.loads(r.stdout)] == [new]
    assert "warning: cannot check smol" in r.stderr and "does not exist" in r.stderr
    assert lines(r.stderr)[-1].startswith("error: could not check 1 of 2 pulled model(s)")


# ---------------------------------------------------------------- bad inputs

OFFLINE = {"HF_HUB_OFFLINE": "1"}
NOWHERE = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: nothing listens


@pytest.mark.parametrize("args, env, expect, message", [
    (("smol",), OFFLINE, 1, "`llmcli models search` needs the hub, but HF_HUB_OFFLINE=1"),
    (("smol",), NOWHERE, 1, "cannot reach the hub"),
    (("smol", "--token", "hf_wrong"), {}, 1, "rejected the token"),
    (("smol", "--limit", "0"), {}, 2, "--limit"),
    (("smol", "--limit", "1001"), {}, 2, "--limit"),
    (("smol", "-n", "many"), {}, 2, "--limit"),
])
def test_bad_search(bad, hub, args, env, expect, message):
    bad.run("models", "search", *args, env=env, expect=expect, message=message)


def test_bad_search_hub_error(bad, hub):
    hub.state.api_status = 503
    bad.run("models", "search", "smol", expect=1, message="HTTP 503 while searching for 'smol'")


def test_bad_outdated(bad, hub, moving):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    bad.run("models", "outdated", env=OFFLINE, expect=1, message="`llmcli models outdated` needs the hub")
    bad.run("models", "outdated", env=NOWHERE, expect=1, message="cannot reach the hub")
    hub.state.api_status = 500
    bad.run("models", "outdated", "--json", expect=1, message="HTTP 500 while checking")


def test_bad_update(bad, hub, moving, gguf_path):
    assert run_cli("pull", f"{moving.repo_id}:Q8_0", "--as", "m").returncode == 0
    assert run_cli("models", "import", str(gguf_path), "--as", "mine").returncode == 0
    before = record("m")
    bad.run("pull", "nosuch", "--update", expect=1, message="no model named 'nosuch'")
    bad.run("pull", "mine", "--update", expect=1, message="imported")
    for flag in (("--as", "x"), ("--revision", "v1"), ("--format", "gguf")):
        bad.run("pull", "m", "--update", *flag, expect=2, message=f"drop {flag[0]}")
    bad.run("pull", "m", "--update", env=OFFLINE, expect=1, message="`llmcli pull --update` needs the hub")
    bad.run("pull", "m", "--update", env=NOWHERE, expect=1, message="cannot reach the hub")
    moving.advance("main", {Q8: None})  # the quant the model was pulled as is gone at the new commit
    bad.run("pull", "m", "--update", expect=1, message=f"file '{Q8}' does not exist")
    hub.state.api_status = 503
    bad.run("pull", "m", "--update", expect=1, message="HTTP 503")
    assert record("m") == before
