#!/usr/bin/env bash
# `make test`, after the whole suite on the default CPython: the suite again on each other CPython
# coroscope supports (3.12 and 3.13), each in its own virtual environment, running only the tests
# whose outcome can depend on the version (see VERSION_INDEPENDENT in tests/conftest.py), and
# the runtime's tests again on its pure-Python paths (PURE_TESTS, from the Makefile).
#
# A shell loop and not nox or tox: the loop is six lines, needs nothing installed, and every
# step is the same one the Makefile takes for the default venv (venv, pip install -e, Debian's
# bcc exposed), so a difference between versions is the version's and not the tool's.
#
# An interpreter is looked for in pyenv's versions, then on PATH (pythonX.Y). One that is not
# found is skipped with the reason; under CI=true that is a failure, as for every capability.
#
# The versions' runs go side by side (VERSIONS_IN_PARALLEL=0 runs them one after the other):
# these tests spend most of their time waiting on the processes they start (servers, load,
# counters), so two runs on the 2-core machine take little longer than one, which keeps the
# whole of CI under its 25 minutes. What makes that safe: ports are free ones the kernel hands
# out, probe regions are per process, each run has its own pytest temporary directory, and the
# tests that look at the machine as a whole (/dev/shm, /tmp, the process table) look only for
# what names their own processes or run. Each run's output is printed whole once it ends, so
# the log reads as if they had run in turn.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local v=$1 root
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for p in "$root"/versions/"$v".*/bin/python"$v" "$root"/versions/"$v"/bin/python"$v"; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    command -v "python$v" || true
}

status=0
ready=()
for v in ${PYTHONS:-3.12 3.13}; do
    py=$(find_python "$v")
    if [ -z "$py" ]; then
        echo "coroscope: CPython $v not found (pyenv versions, or python$v on PATH): its tests are skipped"
        [ "${CI:-}" = true ] && { echo "coroscope: CI=true needs CPython $v"; status=1; }
        continue
    fi
    venv=".venv-$v"
    stale=0                      # what the Makefile's .venv depends on, the same for this one
    for f in pyproject.toml setup.py diag/bootstrap/coroscope-startup.pth runtime/_speedups.c; do
        [ "$f" -nt "$venv/.installed" ] && stale=1
    done
    if [ ! -f "$venv/.installed" ] || [ $stale = 1 ]; then
        [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
        touch "$venv/.installed"
    fi
    if [ -d /usr/lib/python3/dist-packages/bcc ]; then          # Debian's bcc, as for .venv
        site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        mkdir -p "$venv/system-bcc"
        ln -sfn /usr/lib/python3/dist-packages/bcc "$venv/system-bcc/bcc"
        echo "$(pwd)/$venv/system-bcc" > "$site/coroscope-system-bcc.pth"
    fi
    ready+=("$v:$py")
done

# one version's tests: the version-dependent ones, then the runtime's on its pure-Python paths
run_version() {
    local v=$1 py=$2 venv=".venv-$1" tmp=$3 rc=0
    echo "coroscope: the version-dependent tests on CPython $v ($py)"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$tmp/main" \
        --version-dependent-only || rc=1
    if [ -n "${PURE_TESTS:-}" ]; then                          # the Makefile names them
        echo "coroscope: the runtime's pure-Python paths on CPython $v"
        # shellcheck disable=SC2086
        COROSCOPE_PURE_PYTHON=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
            --basetemp "$tmp/pure" --version-dependent-only $PURE_TESTS || rc=1
    fi
    return $rc
}

work=$(mktemp -d -t coroscope-versions.XXXXXX)            # 0700: logs and pytest's temp dirs
trap 'rm -rf "$work"' EXIT
pids=()
for entry in "${ready[@]}"; do
    v=${entry%%:*} py=${entry#*:}
    mkdir -p "$work/$v"
    if [ "${VERSIONS_IN_PARALLEL:-1}" = 1 ]; then
        run_version "$v" "$py" "$work/$v" > "$work/$v.log" 2>&1 &
        pids+=("$!")
    else
        run_version "$v" "$py" "$work/$v" || status=1
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
    cat "$work/${ready[$i]%%:*}.log"
done
exit $status
