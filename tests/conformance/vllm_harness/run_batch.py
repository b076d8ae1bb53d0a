"""Run many `vllm serve` startup checks (stages.check) in one go, each in a fresh state.

    <vllm venv>/bin/python run_batch.py REQUESTS.json RESULTS.json [--logs DIR] [--jobs N]

REQUESTS.json: a list of {"id": ..., "argv": [...], "gpu": {...}, "layer_probe": bool}.
RESULTS.json: {id: result} (stages.check's result, plus "seconds"); vLLM's log of each check in
DIR/<id>.log.

vLLM is imported once per GPU kind (name and compute capability: some modules read them at
import), in a process that installed the fake platform; every check then runs in a fork of that
process, so it starts with vLLM imported (about 9 s saved per check) and leaves nothing behind
for the next one. Up to N GPU kinds (default: the CPUs) are prepared at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import fake_cuda

fake_cuda.set_environment()
fake_cuda.stub_extensions()

# Checks per prepared process before another is prepared for the same GPU kind, so that the
# CPUs share a large group.
CHUNK = 12


def _kind(request: dict[str, Any]) -> tuple:
    gpu = request["gpu"]
    return (gpu["name"], tuple(gpu["compute_capability"]), gpu.get("cuda_runtime_major", 13),
            gpu.get("triton", True))


def _chunks(requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for request in requests:
        groups.setdefault(_kind(request), []).append(request)
    chunks = []
    for group in groups.values():
        chunks += [group[i:i + CHUNK] for i in range(0, len(group), CHUNK)]
    return sorted(chunks, key=len, reverse=True)


def _write(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.rename(path)


def _run_one(request: dict[str, Any], work: Path, logs: Path) -> None:
    """In a fork of the prepared process: one check, its log to logs/<id>.log."""
    import stages

    log = os.open(logs / f"{request['id']}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    started = time.monotonic()
    try:
        result = stages.check(request)
    except BaseException as exc:  # noqa: BLE001 - a harness failure is a result too
        result = {"ok": False, "stage": "harness", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    result["seconds"] = round(time.monotonic() - started, 2)
    _write(work / f"{request['id']}.json", result)


def _run_chunk(chunk: list[dict[str, Any]], work: Path, logs: Path) -> None:
    """In a child of the batch: prepare the GPU kind, import vLLM, fork one check at a time."""
    import stages

    log = os.open(logs / f"_prepare-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    fake_cuda.prepare(chunk[0]["gpu"])
    stages.import_vllm()
    for request in chunk:
        pid = os.fork()
        if pid == 0:
            try:
                _run_one(request, work, logs)
            finally:
                os._exit(0)  # skip the atexit hooks of half-initialized vLLM machinery
        _, status = os.waitpid(pid, 0)
        if not (work / f"{request['id']}.json").exists():
            _write(work / f"{request['id']}.json", {
                "ok": False, "stage": "harness",
                "error": f"the check process died (wait status {status}); see its log",
            })


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requests", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--logs", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    requests = json.loads(args.requests.read_text())
    ids = [r["id"] for r in requests]
    if len(set(ids)) != len(ids):
        raise SystemExit("request ids must be unique")
    logs = args.logs or args.results.parent / "logs"
    work = args.results.parent / "work"
    for directory in (logs, work):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
    pending = _chunks(requests)
    running: set[int] = set()
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            chunk = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                try:
                    _run_chunk(chunk, work, logs)
                except BaseException:  # noqa: BLE001 - into its _prepare log, then the results say so
                    traceback.print_exc()
                finally:
                    os._exit(0)
            running.add(pid)
        pid, _ = os.wait()
        running.discard(pid)
    results = {}
    for request_id in ids:
        path = work / f"{request_id}.json"
        results[request_id] = (
            json.loads(path.read_text()) if path.exists()
            else {"ok": False, "stage": "harness", "error": "no result (the GPU kind's process failed; see its _prepare log)"}
        )
    args.results.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
