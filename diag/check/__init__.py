"""``coroscope check``: the CI gate. Scenarios and budgets in coroscope.toml, a JSON baseline.

Budgets are on numbers that are exact and cannot flake (syscalls per request by name, fds, tasks and
threads leaked per cycle, loop warnings) and, optionally, on timing ratios between two
scenarios measured in the same job.
"""
