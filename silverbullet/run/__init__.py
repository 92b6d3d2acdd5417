"""The run directory's one owner: its file names (files.py) and how its files are read and written
(jsonl.py: resumable appends, atomic rewrites, a torn last line dropped). Stages that write a run and
commands that read one (check, results, report) meet here, not in each other."""
