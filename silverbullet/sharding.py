"""Generation sharded over devices without vLLM (`diagnose --devices cuda:0,cuda:1`).

Why: the HF backend holds one model on one device; a large benchmark on a big model wants every GPU
of the host. One worker process per device generates its share of the problems (every n-th problem
still to do) and appends them to its own part file, chunk by chunk, as `measure` does. The parent
merges the parts into the run's `generations/<tag>.jsonl`. A worker that dies loses only its chunk
in flight: what it finished is merged, the run stops with one line, and the same command resumes
with only the missing problems, so nothing finished is generated twice.

Run as `python -m silverbullet.sharding --tasks T --out O --model M --tag G --device D --config C`
(the parent does this; the tasks file holds each problem with its rendered prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.hf import cpu_cores
from silverbullet.generation.loading import resolve_device
from silverbullet.records import Generation, Problem, to_dict
from silverbullet.run.jsonl import append_rows, read_jsonl_rows, repair_torn_tail

FAIL_AFTER_ENV = "SILVERBULLET_SHARD_FAIL_AFTER"  # "k:n": worker k dies after n rows (tests of resume)


def parts_dir(out_path: Path) -> Path:
    return out_path.parent / f"{out_path.stem}.parts"


def _merge_parts(out_path: Path, done: dict[str, dict]) -> None:
    """Append the finished rows of every part file (this run's, or a crashed run's) to `out_path`."""
    pdir = parts_dir(out_path)
    if not pdir.is_dir():
        return
    for part in sorted(pdir.glob("part-*.jsonl")):
        repair_torn_tail(part)
        new = [r for r in read_jsonl_rows(part) if r["problem_id"] not in done]
        append_rows(out_path, new)
        done.update((r["problem_id"], r) for r in new)
        part.unlink()


def generate_sharded(
    path: str,
    tag: str,
    problems: list[Problem],
    render: Callable[[str], str],
    config: GenerationConfig,
    out_path: Path,
    devices: list[str],
    load_in: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """`measure` with one worker process per device; rows land in `out_path` as `measure` writes them."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(out_path)
    done = {r["problem_id"]: r for r in read_jsonl_rows(out_path)}
    _merge_parts(out_path, done)
    todo = [p for p in problems if p.id not in done]
    total = len(problems)
    pdir = parts_dir(out_path)
    procs: list[tuple[int, str, subprocess.Popen, Path, Path]] = []
    if todo:
        pdir.mkdir(exist_ok=True)
        cfg = json.dumps(asdict(config))
        env = {**os.environ}
        on_cpu = [k for k, d in enumerate(devices) if todo[k :: len(devices)] and _is_cpu(d)]
        if len(on_cpu) > 1 and not env.get("OMP_NUM_THREADS"):
            # Workers on the CPU share its cores: each takes its part (all of them each, the workers'
            # threads outnumber the cores and every step waits on the others' time slices).
            env["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // len(on_cpu)))
        for k, device in enumerate(devices):
            share = todo[k :: len(devices)]
            if not share:
                continue
            tasks, part, log = pdir / f"tasks-{k}.jsonl", pdir / f"part-{k}.jsonl", pdir / f"worker-{k}.log"
            tasks.write_text("".join(json.dumps({**to_dict(p), "prompt": render(p.question)}) + "\n" for p in share))
            cmd = [sys.executable, "-m", "silverbullet.sharding", "--tasks", str(tasks), "--out", str(part),
                   "--model", path, "--tag", tag, "--device", device, "--config", cfg, "--rank", str(k)]  # fmt: skip
            if load_in:
                cmd += ["--load-in", load_in]
            with log.open("w") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            procs.append((k, device, proc, part, log))
    while any(p.poll() is None for _, _, p, _, _ in procs):
        if on_progress:
            finished = sum(_lines(part) for _, _, _, part, _ in procs)
            on_progress(min(total, total - len(todo) + finished), total)
        time.sleep(0.5)
    _merge_parts(out_path, done)
    failed = [(k, d, p.returncode, log) for k, d, p, _, log in procs if p.returncode != 0]
    if failed:
        k, device, code, log = failed[0]
        raise UserError(
            f"generation worker {k} on {device} failed (exit {code}; its log: {log}); its finished rows are "
            f"kept in {out_path}: run the same command again to generate only the {total - len(done)} missing"
        )
    for f in pdir.glob("*"):
        f.unlink()
    if pdir.is_dir():
        pdir.rmdir()
    if on_progress:
        on_progress(total, total)
    return [Generation(**{k: done[p.id].get(k) for k in Generation.__dataclass_fields__}) for p in problems]


def _is_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and resolve_device(device) == "cpu")


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _worker(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    for name in ("--tasks", "--out", "--model", "--tag", "--device", "--config"):
        ap.add_argument(name, required=True)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--load-in", default=None)
    a = ap.parse_args(argv)
    from silverbullet.generation.hf import HFGenerator
    from silverbullet.measure import measure

    rows = read_jsonl_rows(Path(a.tasks))
    prompts = {r["question"]: r.pop("prompt") for r in rows}
    problems = [Problem(**r) for r in rows]
    config = GenerationConfig(**json.loads(a.config))
    fail = os.environ.get(FAIL_AFTER_ENV, "")
    die_after = int(fail.split(":")[1]) if fail.split(":")[0] == str(a.rank) else None

    def progress(done: int, total: int) -> None:
        if die_after is not None and done >= die_after:
            os._exit(3)  # a worker killed mid-run (tests)

    gen = HFGenerator(a.model, tag=a.tag, device=a.device, load_in=a.load_in)
    measure(gen, problems, config, Path(a.out), chunk=config.batch_size, on_progress=progress,
            render=prompts.__getitem__)  # fmt: skip


if __name__ == "__main__":
    from silverbullet.startup import skip_sklearn_in_transformers

    skip_sklearn_in_transformers()
    _worker()
