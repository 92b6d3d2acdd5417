"""The real client: lm-evaluation-harness (HF backend) on the reference model and its demo quantized
variant, with a custom task over the reference task's eval split and --log_samples; `diagnose` reads
the samples it writes, and its accuracies equal lm-eval's own metric on the same samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.benchmarks import load_benchmark
from silverbullet.diagnose import demo_quantized_path

pytest.importorskip("lm_eval")
ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")
LIMIT = 20
METRIC = "exact_match,answer-line"

# The task a user writes for a model that answers in the step format (docs/own-generations.md).
TASK_YAML = """task: silverbullet_synthetic
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\n"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\nQuestion:"]
  do_sample: false
  max_gen_toks: 320
filter_list:
  - name: answer-line
    filter:
      - function: regex
        regex_pattern: "The answer is: (-?[0-9.,/]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.mark.slow
def test_lm_eval_samples_round_trip(tmp_path):
    problems = load_benchmark("synthetic", split="eval", limit=LIMIT)
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in problems))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "silverbullet_synthetic.yaml").write_text(TASK_YAML.format(data=data))
    models = {"reference": MODEL, "quantized": str(Path(demo_quantized_path(MODEL)).resolve())}
    # The two run side by side: each on its share of the cores (with all of them each, their threads
    # outnumber the cores and the pair ran 2-6x slower on 2 cores).
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // len(models)))}
    procs = {
        tag: subprocess.Popen(
            [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={path},dtype=float32",
             "--include_path", str(tasks), "--tasks", "silverbullet_synthetic", "--limit", str(LIMIT),
             "--batch_size", str(LIMIT), "--device", "cpu", "--log_samples", "--output_path", str(tmp_path / tag)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env,
        )  # fmt: skip
        for tag, path in models.items()
    }
    lm_acc = {}
    for tag, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        (results,) = (tmp_path / tag).rglob("results_*.json")
        lm_acc[tag] = json.loads(results.read_text())["results"]["silverbullet_synthetic"][METRIC]
    assert lm_acc["reference"] > lm_acc["quantized"]  # the demo setting costs accuracy here too

    r = subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", "diagnose", "--reference-samples", str(tmp_path / "reference"),
         "--quantized-samples", str(tmp_path / "quantized"), "--benchmark", "synthetic",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    smp = s["samples"]
    assert s["n"] == LIMIT and smp["format"] == {"reference": "lm-eval", "quantized": "lm-eval"}
    assert smp["task"] == "silverbullet_synthetic" and smp["paired_by"] == "id"
    for tag in ("reference", "quantized"):
        assert s["accuracy"][tag] == round(lm_acc[tag], 4)
        own = smp["own_scores"][tag][METRIC]
        assert own["n"] == LIMIT and own["disagree"] == 0 and own["file_accuracy"] == round(lm_acc[tag], 4)
    # The problems were found in the benchmark: the run's ids are the benchmark's, for repair --from.
    ids = [json.loads(x)["id"] for x in (tmp_path / "run" / "problems.jsonl").read_text().splitlines()]
    assert ids == [p.id for p in problems]
    assert s["flips"]["ref_right_quant_wrong"] > 0 and s["error_types"]["quantized"]["execution"] > 0
    assert s["margins"]["status"].startswith("unavailable") and s["confirmation"]["status"].startswith("not run")
