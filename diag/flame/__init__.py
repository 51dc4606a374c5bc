"""Flame graphs: on-CPU, wall-clock and await profiles, by request or by task, and their diffs.

Modules: ``pyspy`` (the external sampler), ``sampler`` and ``awaits`` (the in-process sampler,
imported into targets: standard library only), ``fold`` (raw stacks -> the report model),
``formats`` (collapsed, speedscope, interactive SVG/HTML), ``diff`` and ``command``.
"""
