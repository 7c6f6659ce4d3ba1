"""`llmcli pull` and friends against a real HTTP hub on 127.0.0.1 (tests/hub_server.py),
through the real CLI in subprocesses: huggingface_hub makes real requests, nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from hub_server import (DUAL_REPO, GATED_REPO, GGUF_REPO, HF_REPO, NO_Q4KM_REPO, PRIVATE_REPO, PRIVATE_TOKEN, HubServer,
                        build_repos, dual_format_repo, hub, hub_server)  # noqa: F401 - fixtures
from llmcli.store.metadata import human_bytes
from llmcli.store.modelstore import ModelStore

Q4KM = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
Q8 = "SmolLM2-135M-Instruct-Q8_0.gguf"
Q40 = "SmolLM2-135M-Instruct-Q4_0.gguf"


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def repo_dir(repo_id: str) -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo_id.replace("/", "--"))


def models() -> dict:
    return {n: r.to_json() for n, r in ModelStore().snapshot().models.items()}


def remote(srv, repo_id, name):
    return srv.state.repos[repo_id].files[name]


def one_line(stderr: str) -> bool:
    return stderr.count("\n") == 1 and stderr.startswith("error: ")


# ---------------------------------------------------------------- happy paths

def test_pull_by_quant_tag_then_generate_offline_with_server_stopped(gguf_path, hub, monkeypatch):
    srv = HubServer()  # a server of its own, so it can be stopped
    for r in build_repos(gguf_path):
        srv.add(r)
    srv.start()
    srv.point(monkeypatch)
    try:
        r = run_cli("pull", f"{GGUF_REPO}:q4_k_m", "--as", "smol")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and r.stderr.count("\n") == 1 and "sha256 verified" in r.stderr  # no TTY: no bars
        rec = models()["smol"]
        path = Path(rec["path"])
        snapshot = repo_dir(GGUF_REPO) / "snapshots" / rec["commit"]
        assert path == snapshot / Q4KM and path.is_symlink()  # the HF cache itself, no copy
        blob = Path(os.path.realpath(path))
        assert blob.parent == repo_dir(GGUF_REPO) / "blobs" and blob.name == remote(srv, GGUF_REPO, Q4KM).sha256
        assert sha256(path) == remote(srv, GGUF_REPO, Q4KM).sha256
        assert (rec["quant"], rec["format"], rec["repo"]) == ("Q4_K_M", "gguf", GGUF_REPO)
        assert (repo_dir(GGUF_REPO) / "refs" / "main").read_text() == rec["commit"]
    finally:
        srv.stop()
    r = run_cli("generate", "-m", "smol", "Say hi", "--max-tokens", "4", "--temperature", "0",
                env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert models()["smol"]["last_used"]


def test_pull_exact_file_and_split_gguf(hub):
    r = run_cli("pull", f"{GGUF_REPO}/{Q8}")
    assert r.returncode == 0, r.stderr
    name = f"{GGUF_REPO}:Q8_0"
    assert sha256(models()[name]["path"]) == remote(hub, GGUF_REPO, Q8).sha256

    r = run_cli("pull", f"{GGUF_REPO}:Q6_K", "--as", "split")
    assert r.returncode == 0, r.stderr
    assert "split GGUF" in r.stderr and "2 parts" in r.stderr
    rec = models()["split"]
    assert rec["path"].endswith("-00001-of-00002.gguf")
    assert [Path(f["path"]).name for f in rec["files"]] == [
        "SmolLM2-135M-Instruct-Q6_K-00001-of-00002.gguf", "SmolLM2-135M-Instruct-Q6_K-00002-of-00002.gguf"]
    for f in rec["files"]:
        assert sha256(f["path"]) == remote(hub, GGUF_REPO, f["name"]).sha256


def test_pull_hf_format_repo_downloads_only_allowed_files(hub):
    r = run_cli("pull", HF_REPO, "--as", "smolhf")
    assert r.returncode == 0, r.stderr
    rec = models()["smolhf"]
    folder = Path(rec["path"])
    assert rec["format"] == "hf" and folder.parent.name == "snapshots"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json"]
    fetched = " ".join(r["path"] for r in hub.state.requests())
    for never in ("pytorch_model.bin", "onnx", "README.md", ".gitattributes"):
        assert never not in fetched
    for f in rec["files"]:  # LFS by sha256, the small git files by their git blob sha1
        assert f["sha256"] or f["blob_id"]
    r = run_cli("models", "show", "smolhf")
    assert r.returncode == 0, r.stderr
    assert "37.4K" in r.stdout and "context length: 8192" in r.stdout and "apache-2.0" in r.stdout


def test_default_quant_choice_is_explained(hub):
    r = run_cli("pull", GGUF_REPO, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert Q4KM in r.stdout and "Q4_K_M is the default quant" in r.stderr
    r = run_cli("pull", NO_Q4KM_REPO, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["quant"] == "Q5_K_M" and [f["name"] for f in plan["files"]] == ["tiny-Q5_K_M.gguf"]
    assert "Q4_K_M is not in the repository" in r.stderr and "Q5_K_M" in r.stderr
    assert models() == {} and not hub.state.requests(contains="/cdn/")


@pytest.fixture
def dual_hub(gguf_path, hub, monkeypatch):
    """A hub of its own holding one repository with both GGUF and safetensors weights."""
    srv = HubServer()
    srv.add(dual_format_repo(gguf_path))
    srv.start()
    srv.point(monkeypatch)
    yield srv
    srv.stop()


def test_both_formats_pick_by_machine_and_say_why(dual_hub):
    from llmcli.backends.hardware import cuda_gpu_name
    from llmcli.store import hub as store_hub

    r = run_cli("pull", DUAL_REPO, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    if cuda_gpu_name() is None:  # this machine: no CUDA GPU, so GGUF for llama.cpp on CPU
        assert plan["format"] == "gguf" and [f["name"] for f in plan["files"]] == [Q4KM]
        assert "no CUDA GPU is here: llama.cpp runs GGUF fastest on CPU" in r.stderr
        assert "pass --format hf" in r.stderr
    r = run_cli("pull", DUAL_REPO, "--dry-run", "--json", "--format", "hf")
    plan = json.loads(r.stdout)
    assert plan["format"] == "hf" and "--format hf: pulling the safetensors weights" in r.stderr
    assert Q4KM not in {f["name"] for f in plan["files"]}
    r = run_cli("pull", DUAL_REPO, "--dry-run", "--json", "--format", "gguf")
    assert json.loads(r.stdout)["format"] == "gguf" and "no CUDA GPU" not in r.stderr
    # the rule on a CUDA machine (the preference is the caller's fact; the plan is a real hub call)
    p = store_hub.plan(DUAL_REPO, prefer=("hf", "a CUDA GPU is here (H100) for the torch backend"))
    assert p.format == "hf" and "model.safetensors" in {f.name for f in p.files}
    assert p.note == ("the repository has GGUF and safetensors weights, and a CUDA GPU is here (H100) for the "
                      "torch backend: pulling the safetensors weights, not the GGUF files (pass --format gguf "
                      "for a GGUF)")
    assert store_hub.plan(DUAL_REPO, fmt="gguf", prefer=("hf", "x")).format == "gguf"
    assert models() == {} and not dual_hub.state.requests(contains="/cdn/")


def test_revision_pin_and_name(hub):
    r = run_cli("pull", f"{GGUF_REPO}:Q6_K", "--revision", "v1.0", "--as", "smol")
    assert r.returncode == 0, r.stderr
    rec = models()["smol"]
    assert rec["commit"] == "b" * 40 and rec["revision"] == "v1.0"
    assert Path(rec["path"]).parent.name == "b" * 40
    assert (repo_dir(GGUF_REPO) / "refs" / "v1.0").read_text() == "b" * 40
    r = run_cli("pull", f"{GGUF_REPO}:Q6_K", "--revision", "v9")
    assert r.returncode == 1 and one_line(r.stderr) and "revision 'v9' does not exist" in r.stderr


# ---------------------------------------------------------------- interruptions and corruption

def test_connection_cut_half_way_is_resumed_with_range(hub):
    size = remote(hub, GGUF_REPO, Q40).size
    hub.state.cut_once.add(Q40)
    r = run_cli("pull", f"{GGUF_REPO}:Q4_0")
    assert r.returncode == 0, r.stderr
    ranges = [q["range"] for q in hub.state.requests("GET", "/cdn/")]
    assert ranges[0] is None
    resumed = [int(x.split("=")[1].rstrip("-")) for x in ranges if x]
    assert resumed and 0 < resumed[0] < size, ranges
    assert sha256(models()[f"{GGUF_REPO}:Q4_0"]["path"]) == remote(hub, GGUF_REPO, Q40).sha256


def _pull_paused_half_way(hub, *args: str, **popen) -> tuple[subprocess.Popen, threading.Event]:
    """Start ``llmcli pull GGUF_REPO:Q8_0 ARGS``; return once the server has paused half-way through
    the file and the client has written part of it. Set the event to let the server go on."""
    blobs = repo_dir(GGUF_REPO) / "blobs"
    reached, release = hub.state.pause_half(Q8)
    proc = subprocess.Popen([sys.executable, "-m", "llmcli", "pull", f"{GGUF_REPO}:Q8_0", *args],
                            env=dict(os.environ), **popen)
    try:
        assert reached.wait(60), "the server never sent half of the file"
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in blobs.glob("*.incomplete")):
            assert time.monotonic() < deadline, "the client wrote nothing"
            time.sleep(0.05)
    except BaseException:
        release.set()
        proc.kill()
        raise
    return proc, release


def test_sigkill_half_way_registers_nothing_and_next_pull_completes(hub):
    blobs = repo_dir(GGUF_REPO) / "blobs"
    proc, release = _pull_paused_half_way(hub, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert models() == {}
    partial = list(blobs.glob("*.incomplete"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < remote(hub, GGUF_REPO, Q8).size
    r = run_cli("models", "list", "--all")
    assert "partial downloads" in r.stdout and "stale" in r.stdout and partial[0].name in r.stdout

    r = run_cli("pull", f"{GGUF_REPO}:Q8_0")
    assert r.returncode == 0, r.stderr
    path = models()[f"{GGUF_REPO}:Q8_0"]["path"]
    assert sha256(path) == remote(hub, GGUF_REPO, Q8).sha256
    assert partial[0].exists()  # not resumed across processes: a fresh download, the stale file left

    r = run_cli("models", "prune")
    assert r.returncode == 0, r.stderr
    assert "partial download" in r.stdout and "1 partial download(s)" in r.stderr
    assert not list(blobs.glob("*.incomplete"))
    assert run_cli("models", "verify", f"{GGUF_REPO}:Q8_0").returncode == 0


def test_prune_during_a_slow_pull_leaves_it_intact(hub):
    """The server stops half-way (a slow pull): prune keeps the live partial file — also once its
    lock file is gone, as if huggingface_hub had moved its locks — and the pull then completes."""
    blobs = repo_dir(GGUF_REPO) / "blobs"
    proc, release = _pull_paused_half_way(hub, "--as", "slow", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        (partial,) = blobs.glob("*.incomplete")
        size = partial.stat().st_size
        r = run_cli("models", "list", "--all")
        assert "downloading now" in r.stdout, r.stdout
        r = run_cli("models", "prune")
        assert r.returncode == 0 and "0 partial download(s)" in r.stderr, r.stderr
        assert partial.exists() and partial.stat().st_size == size
        locks = list((repo_dir(GGUF_REPO).parent / ".locks").rglob("*.lock"))
        assert locks, "huggingface_hub holds a lock file while it downloads"
        for lock in locks:
            lock.unlink()
        r = run_cli("models", "prune")
        assert r.returncode == 0 and "0 partial download(s)" in r.stderr, r.stderr
        assert partial.exists()
    finally:
        release.set()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert sha256(models()["slow"]["path"]) == remote(hub, GGUF_REPO, Q8).sha256
    assert run_cli("models", "verify", "slow").returncode == 0


def test_corrupt_bytes_fail_and_leave_nothing(hub):
    name = "tiny-Q8_0.gguf"
    f = remote(hub, NO_Q4KM_REPO, name)
    hub.state.corrupt.add(name)
    r = run_cli("pull", f"{NO_Q4KM_REPO}:Q8_0")
    assert r.returncode == 1 and one_line(r.stderr), r.stderr
    assert "corrupt" in r.stderr and "sha256" in r.stderr and "nothing was registered" in r.stderr
    assert models() == {}
    assert not (repo_dir(NO_Q4KM_REPO) / "blobs" / f.sha256).exists()
    assert not list(repo_dir(NO_Q4KM_REPO).glob("snapshots/*/" + name))
    assert not list(repo_dir(NO_Q4KM_REPO).glob("blobs/*.incomplete"))
    hub.state.corrupt.clear()
    assert run_cli("pull", f"{NO_Q4KM_REPO}:Q8_0").returncode == 0


def test_damaged_cache_file_is_caught_by_verify_and_repaired_by_pull(hub):
    assert run_cli("pull", f"{NO_Q4KM_REPO}:Q5_K_M", "--as", "t").returncode == 0
    blob = Path(os.path.realpath(models()["t"]["path"]))
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = run_cli("models", "verify", "t")
    assert r.returncode == 1 and "mismatch" in r.stdout and "llmcli pull" in r.stderr
    r = run_cli("pull", f"{NO_Q4KM_REPO}:Q5_K_M", "--as", "t")
    assert r.returncode == 0, r.stderr
    assert run_cli("models", "verify", "t").returncode == 0


def test_concurrent_pulls_of_the_same_model(hub):
    cmd = [sys.executable, "-m", "llmcli", "pull", f"{GGUF_REPO}:Q4_K_M", "--as", "same"]
    procs = [subprocess.Popen(cmd, env=dict(os.environ), stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(120), p.stderr.read().decode()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    rec = models()["same"]
    assert sha256(rec["path"]) == remote(hub, GGUF_REPO, Q4KM).sha256
    assert not list((repo_dir(GGUF_REPO) / "blobs").glob("*.incomplete"))
    assert list(models()) == ["same"]


# ---------------------------------------------------------------- errors

def test_error_answers_are_one_line_with_what_to_do(hub):
    r = run_cli("pull", f"{PRIVATE_REPO}:Q4_K_M")
    assert r.returncode == 1 and one_line(r.stderr), r.stderr
    assert "HF_TOKEN" in r.stderr and "--token" in r.stderr and "401" in r.stderr

    r = run_cli("pull", f"{GATED_REPO}:Q4_K_M")
    assert r.returncode == 1 and one_line(r.stderr), r.stderr
    assert "gated" in r.stderr and "accept" in r.stderr and "HF_TOKEN" in r.stderr

    r = run_cli("pull", "TestOrg/does-not-exist")
    assert r.returncode == 1 and one_line(r.stderr) and "does not exist" in r.stderr and "404" in r.stderr

    r = run_cli("pull", f"{GGUF_REPO}/nope.gguf")
    assert r.returncode == 1 and one_line(r.stderr) and "'nope.gguf' does not exist" in r.stderr
    assert Q4KM in r.stderr  # lists the files that exist

    r = run_cli("pull", f"{GGUF_REPO}:Q3_K_S")
    assert r.returncode == 1 and one_line(r.stderr), r.stderr
    assert "no GGUF file for quant 'Q3_K_S'" in r.stderr and "available quants: Q4_K_M, Q4_0, Q6_K, Q8_0" in r.stderr

    r = run_cli("pull", f"{HF_REPO}:Q4_K_M")
    assert r.returncode == 1 and one_line(r.stderr) and "no GGUF files" in r.stderr

    r = run_cli("pull", "not-a-repo")
    assert r.returncode == 2 and one_line(r.stderr)
    assert models() == {}


def test_tokens_unlock_private_and_gated_repos(hub):
    r = run_cli("pull", f"{PRIVATE_REPO}:Q4_K_M", "--token", PRIVATE_TOKEN)
    assert r.returncode == 0, r.stderr
    r = run_cli("pull", f"{GATED_REPO}:Q4_K_M", env={"HF_TOKEN": PRIVATE_TOKEN})
    assert r.returncode == 0, r.stderr
    assert {m["license"] for m in models().values()} == {"apache-2.0", "llama3"}
    r = run_cli("pull", f"{PRIVATE_REPO}:Q4_K_M", "--token", "wrong", "--as", "x")
    assert r.returncode == 1 and "rejected the token" in r.stderr


def test_no_network_and_offline_mode(hub):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = run_cli("pull", f"{GGUF_REPO}:Q4_K_M", env={"HF_ENDPOINT": dead})
    assert r.returncode == 1 and one_line(r.stderr), r.stderr
    assert "cannot reach the hub" in r.stderr and "offline" in r.stderr
    r = run_cli("pull", f"{GGUF_REPO}:Q4_K_M", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and one_line(r.stderr) and "HF_HUB_OFFLINE" in r.stderr


# ---------------------------------------------------------------- store round trips

def test_rm_frees_files_unless_another_model_uses_them(hub):
    for args in ((f"{NO_Q4KM_REPO}:Q8_0", "--as", "a"), (f"{NO_Q4KM_REPO}/tiny-Q8_0.gguf", "--as", "b"),
                 (f"{NO_Q4KM_REPO}:F16", "--as", "c")):
        assert run_cli("pull", *args).returncode == 0
    a, c = models()["a"], models()["c"]
    assert a["path"] == models()["b"]["path"]
    blob_a, blob_c = os.path.realpath(a["path"]), os.path.realpath(c["path"])

    r = run_cli("models", "rm", "a", "--yes")
    assert r.returncode == 0 and "freed 0 B" in r.stderr
    assert os.path.exists(blob_a) and os.path.exists(models()["b"]["path"])  # b still uses it

    r = run_cli("models", "rm", "c", "--yes")
    assert r.returncode == 0 and f"freed {human_bytes(remote(hub, NO_Q4KM_REPO, 'tiny-F16.gguf').size)}" in r.stderr
    assert not os.path.exists(blob_c) and not os.path.lexists(c["path"])

    assert run_cli("models", "rm", "b", "--yes").returncode == 0
    assert not repo_dir(NO_Q4KM_REPO).exists()  # nothing left of the repo in the HF cache
    assert models() == {}


def test_list_json_and_name_conflicts(hub):
    assert run_cli("pull", f"{NO_Q4KM_REPO}:Q8_0", "--as", "t").returncode == 0
    listed = json.loads(run_cli("models", "list", "--json").stdout)
    (m,) = listed["models"]
    assert (m["name"], m["repo"], m["quant"], m["format"], m["source"]) == ("t", NO_Q4KM_REPO, "Q8_0", "gguf", "hf")
    assert m["size"] == remote(hub, NO_Q4KM_REPO, "tiny-Q8_0.gguf").size and m["last_used"] is None
    # The same name for another repository is refused before anything is downloaded.
    hub.state.reset()
    r = run_cli("pull", f"{GGUF_REPO}:Q4_K_M", "--as", "t")
    assert r.returncode == 1 and "already exists" in r.stderr and not hub.state.requests(contains="/cdn/")
    # Re-pulling the same repo under its name replaces it (here: another quant) and frees the old file.
    old_blob = os.path.realpath(models()["t"]["path"])
    assert run_cli("pull", f"{NO_Q4KM_REPO}:F16", "--as", "t").returncode == 0
    assert models()["t"]["quant"] == "F16" and not os.path.exists(old_blob)


def test_progress_bars_only_on_a_terminal(hub):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, COLUMNS="120")
    child = pexpect.spawn(sys.executable, ["-m", "llmcli", "pull", f"{GGUF_REPO}:Q4_0"], env=env, timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before.decode("utf-8", "replace")
    assert child.exitstatus == 0, out
    assert "MB/s" in out and "98.4/98.4 MB" in out and "pulled" in out
    r = run_cli("pull", f"{GGUF_REPO}:Q4_0", "--quiet")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""
