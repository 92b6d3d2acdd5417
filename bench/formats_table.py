"""Write the formats table from bench/results/formats.json into docs/formats.md (between markers)."""

import json
import re
from pathlib import Path

d = json.loads(Path("bench/results/formats.json").read_text())


def yn(v):
    return "yes" if v is True else "no" if v is False else "-"


lines = [
    f"On this CPU ({d['cpu']}; {d['threads']} threads; accuracy on the synthetic eval split; "
    "transformers "
    + d["versions"]["transformers"]
    + ", bitsandbytes "
    + str(d["versions"]["bitsandbytes"])
    + ", auto-round "
    + str(d["versions"]["auto-round"])
    + ", compressed-tensors "
    + str(d["versions"]["compressed-tensors"])
    + "".join(f", {k} {d['versions'][k]}" for k in ("gptqmodel", "optimum") if d["versions"].get(k))
    + "):",
    "",
    "| format | loads | diagnose | repair (LoRA) | accuracy (n) | note |",
    "|---|---|---|---|---|---|",
]
order = [
    "fp32",
    "compressed-tensors W4A16",
    "compressed-tensors W8A8",
    "compressed-tensors FP8",
    "bitsandbytes NF4 (",
    "bitsandbytes INT8",
    "bitsandbytes NF4 saved",
    "AutoRound",
    "GPTQ",
    "AWQ",
]
rows = sorted(d["rows"], key=lambda r: next((i for i, o in enumerate(order) if r["format"].startswith(o)), 99))
for r in rows:
    acc = f"{r['accuracy']:.0%} ({r['accuracy_n']})" if r.get("accuracy") is not None else "-"
    why = r.get("reason") or r.get("repair_error") or r.get("diagnose_error") or r.get("accuracy_error") or ""
    why = why.replace("|", "/")
    note = why[:110] if why else f"{r['device'].upper()}, {r.get('linear_class', '')}"
    note += "; adapter served unmerged" if r.get("adapter_served") == "unmerged" and not why else ""
    lines.append(
        f"| {r['format']} | {yn(r.get('loads'))} | {yn(r.get('diagnose'))} | {yn(r.get('repair'))} | {acc} | {note} |"
    )
for r in rows:
    if "measured_on" in r:  # re-measured alone (bench/formats.py --only)
        m = r["measured_on"]
        v = m["versions"]
        lines += ["", f"The {r['format']} row was measured again alone, on {m['cpu'].split(';')[0]} "
                  f"({m['threads']} threads; transformers {v['transformers']}, peft {v.get('peft')}, "
                  f"auto-round {v.get('auto-round')})."]  # fmt: skip
missing = [o for o in order if not any(r["format"].startswith(o) for r in d["rows"])]
if missing:
    lines += ["", "Not measured (the bench run did not reach them in the time available): " + ", ".join(missing) + "."]
table = "\n".join(lines)
for f in ("docs/formats.md",):
    p = Path(f)
    s = p.read_text()
    s = re.sub(
        r"<!-- formats-table -->.*?<!-- /formats-table -->",
        "<!-- formats-table -->\n" + table.replace("\\", "\\\\") + "\n<!-- /formats-table -->",
        s,
        flags=re.S,
    )
    p.write_text(s)
print(table)
