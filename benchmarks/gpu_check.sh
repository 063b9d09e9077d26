#!/usr/bin/env bash
# One prepared run on a GPU machine: the device and versions, the device tests, the speed benchmark on CUDA (graph,
# sequence, training and compile suites) and a short graph-classification run of the CLI. Every stage has its own
# timeout (device 20 s, device tests 120 s, broader tests 90 s, speed 210 s, molecules 120 s, CLI 60 s: at most
# 10 min 20 s in all).
#
#   OUT=/path/to/folder bash benchmarks/gpu_check.sh            # on a machine with CUDA
#   OUT=/tmp/gpucheck bash benchmarks/gpu_check.sh --quick      # smoke run: tiny sizes, CPU when there is no CUDA
#   OUT=... bash benchmarks/gpu_check.sh --only=tests_devices,speed   # some of the stages (after device):
#                                                               # tests_devices, tests_broad, speed, molecules,
#                                                               # bench_digits
#
# Needs python3 (or $PYTHON) with torch and torch_geometric; pytest, scikit-learn and matplotlib are used when
# present (a stage that needs a missing one says so and is skipped). It installs nothing, downloads nothing, runs the
# package from this source tree (PYTHONPATH) and makes its own data.
#
# Writes benchmarks/results/speed_<device>.md (+ .csv, .png: command, versions, tables, headline ratios, then a section with
# this script's stages, the test summaries and the host-device syncs of a training step) under $OUT, or into this
# tree's benchmarks/results when OUT is unset; the log of every stage goes to $OUT/gpu_check (or a temporary folder).
set -uo pipefail

usage() { echo "usage: [OUT=DIR] [PYTHON=python3] bash benchmarks/gpu_check.sh [--quick] [--only=STAGE,...]" >&2; }
ALL_STAGES=tests_devices,tests_broad,speed,molecules,bench_digits
QUICK=0
ONLY=$ALL_STAGES
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --only=*) ONLY="${arg#--only=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: error: unknown argument '$arg'" >&2; usage; exit 2 ;;
    esac
done
for name in ${ONLY//,/ }; do
    case ",$ALL_STAGES," in
        *",$name,"*) ;;
        *) echo "gpu_check.sh: error: --only: unknown stage '$name' (choose from $ALL_STAGES)" >&2; exit 2 ;;
    esac
done
wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1  # nothing written into the source tree
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
"$PY" -c '
import sys
try:
    import torch, torch_geometric
except ImportError:
    sys.exit(3)
sys.exit(0 if torch.cuda.is_available() else 1)'
case $? in
    0) DEVICE=cuda ;;
    1) if [ "$QUICK" = 1 ]; then
           DEVICE=cpu
       else
           echo "gpu_check.sh: error: no CUDA device (torch.cuda.is_available() is False); --quick runs the CPU smoke version" >&2
           exit 2
       fi ;;
    *) echo "gpu_check.sh: error: $PY cannot import torch and torch_geometric (set PYTHON to one that can)" >&2
       exit 2 ;;
esac
NAME="speed_$DEVICE"
if [ -n "${OUT:-}" ]; then
    RESULTS="$OUT/benchmarks/results"
    LOGS="$OUT/gpu_check"
else
    RESULTS="$ROOT/benchmarks/results"
    LOGS="$(mktemp -d -t gpu_check.XXXXXX)"
fi
mkdir -p "$RESULTS" "$LOGS" || exit 1
START=$(date +%s)
STAGES="$LOGS/stages.tsv"
: > "$STAGES"

# stage NAME SECONDS COMMAND...: COMMAND under `timeout`, its output to the terminal and to $LOGS/NAME.log
stage() {
    local name="$1" limit="$2" t0 rc
    shift 2
    t0=$(date +%s)
    echo "=== $name (limit ${limit} s): $*"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        rc="$rc (timed out after $limit s)"
    fi
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >> "$STAGES"
    echo "=== $name: exit status $rc"
}
skip() {
    echo "=== $1: skipped ($2)"
    printf '%s\tskipped: %s\t0\n' "$1" "$2" >> "$STAGES"
}

# 1. the device and the versions
stage device 20 "$PY" - <<'EOF'
import importlib, platform, shutil, subprocess, torch
if shutil.which('nvidia-smi'):
    subprocess.run(['nvidia-smi'], timeout=10)
print('versions: python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'device: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, compute capability '
          f'{p.major}.{p.minor}, {torch.cuda.mem_get_info()[0] / 2**30:.0f} GiB free')
else:
    print('device: cpu (no CUDA)')
for name in ('torch_geometric', 'torch_scatter', 'torch_sparse', 'pytest', 'sklearn', 'scipy', 'numpy', 'matplotlib',
             'networkx', 'hypothesis'):
    try:
        print('package:', name, getattr(importlib.import_module(name), '__version__', '?'))
    except ImportError:
        print('package:', name, 'not installed')
EOF

# 2. tests: the device tests (their CUDA cases run here), then a broader selection of the suite (on the CPU)
if [ "$QUICK" = 1 ]; then
    BROAD=(tests/test_fused.py tests/test_block.py)
else
    BROAD=(tests/test_fused.py tests/test_conv.py tests/test_block.py tests/test_attention_graph.py
           tests/test_pyg_integration.py tests/test_edges.py tests/test_validation.py tests/test_fuzz.py
           tests/test_training.py tests/test_models.py)
fi
if ! has pytest; then
    wanted tests_devices && skip tests_devices 'pytest is not installed'
    wanted tests_broad && skip tests_broad 'pytest is not installed'
else
    wanted tests_devices && stage tests_devices 120 "$PY" -m pytest tests/test_devices.py -p no:cacheprovider \
        -o addopts= -q -rfEs -s --junitxml="$LOGS/tests_devices.xml"
    wanted tests_broad && stage tests_broad 90 "$PY" -m pytest "${BROAD[@]}" -p no:cacheprovider -o addopts= -q \
        -rfE -m 'not slow' --continue-on-collection-errors --junitxml="$LOGS/tests_broad.xml"
fi

# 3. the speed benchmark (per-suite budget: a suite starts no new size after --max-seconds)
BENCH_LIMIT=60
if [ "$QUICK" = 1 ]; then
    BENCH_LIMIT=120  # the CPU trains the CLI's models more slowly
    SPEED=(--quick --suites graph sequence train compile --compile-size 300x4 --seq-dtypes float32 bfloat16
           --heads-channels 2x8 4x16)
else
    SPEED=(--nodes 1e4 1e5 1e6 --degrees 16 32 64 --headline 1e6x32 --heads-channels 4x16 8x64
           --seq 1024 2048 4096 8192 16384 --seq-dtypes float32 bfloat16 --sparse-seq-max 4096
           --suites graph sequence train compile --compile-size 1e5x32 --train-graphs 2048 --train-epochs 5
           --repeats 5 --warmup 3 --max-seconds 45)
fi
wanted speed && stage speed 210 "$PY" benchmarks/speed.py --device "$DEVICE" --threads "$(nproc)" --name "$NAME" \
    --out "$RESULTS" "${SPEED[@]}"

# 3b. the molecule suite: a training step of every graph model on Peptides-func-shaped batches (synthetic graphs)
if [ "$QUICK" = 1 ]; then
    MOLECULES=(--batch-size 8 --hidden 32 --steps 1 --rounds 1)
else
    MOLECULES=(--batch-size 128 --hidden 128 --steps 3 --rounds 1)
fi
wanted molecules && stage molecules 120 "$PY" benchmarks/molecule_speed.py --device "$DEVICE" --out "$RESULTS" \
    "${MOLECULES[@]}"

# 4. one short graph-classification run of the CLI (scikit-learn's digits: shipped with scikit-learn)
if ! wanted bench_digits; then
    :
elif has sklearn; then
    stage bench_digits "$BENCH_LIMIT" "$PY" -m pyg_ple bench --dataset digits --digits-n 300 --models laplacian,transformer,gat \
        --folds 2 --epochs 2 --device "$DEVICE" --out "$LOGS/bench_digits" --overwrite --no-progress --no-save-models
else
    skip bench_digits 'scikit-learn is not installed (the speed stage trained on synthetic graphs)'
fi

# 5. this script's section, appended to the benchmark's markdown
COMMAND="${OUT:+OUT=$OUT }bash benchmarks/gpu_check.sh $*"
SOURCE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
"$PY" - "$RESULTS/$NAME.md" "$LOGS" "$DEVICE" "$COMMAND" "$SOURCE" "$START" <<'EOF'
import os, sys, time
import xml.etree.ElementTree as ET
md, logs, device, command, source, start = sys.argv[1:]
seconds = int(time.time() - int(start))


def read(name):
    try:
        with open(os.path.join(logs, name)) as fh:
            return fh.read()
    except OSError:
        return ''


def junit(name):
    """{test id: (outcome, message)} from a pytest junit file."""
    try:
        root = ET.parse(os.path.join(logs, name)).getroot()
    except (OSError, ET.ParseError):
        return None
    out = {}
    for case in root.iter('testcase'):
        outcome, message = 'passed', ''
        for child in case:
            if child.tag in ('failure', 'error', 'skipped'):
                outcome, message = child.tag, (child.get('message') or '').splitlines()[0][:200] if child.get('message') else ''
        out[f"{case.get('classname')}::{case.get('name')}"] = (outcome, message)
    return out


ran = {line.split('\t')[0] for line in read('stages.tsv').splitlines()}  # stages of this run only
device_log = read('device.log')
L = ['', '## benchmarks/gpu_check.sh', '',
     f'- command: `{command}` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {seconds} s in all)',
     f'- source: {source}']
L += [f'- {line}' for line in device_log.splitlines() if line.startswith(('device:', 'versions:'))]
packages = [line.split(':', 1)[1].strip() for line in device_log.splitlines() if line.startswith('package:')]
if packages:
    L.append('- packages: ' + ', '.join(packages))
L += ['', '| stage | exit status | seconds | log |', '|---|---|---|---|']
for line in read('stages.tsv').splitlines():
    name, rc, secs = line.split('\t')
    L.append(f'| {name} | {rc} | {secs} | gpu_check/{name}.log |')
L.append('')
for name in ('tests_devices', 'tests_broad'):
    cases = junit(f'{name}.xml') if name in ran else None
    if cases is None:
        continue
    counts = {}
    for outcome, _ in cases.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    L.append(f'- {name}: ' + ', '.join(f'{n} {k}' for k, n in sorted(counts.items())))
    L += [f'  - {k} {test}: {msg}' for test, (k, msg) in cases.items() if k in ('failure', 'error')]
L += ['', '### Host-device syncs in one training step of a block (forward, backward, Adam step)', '']
cases = (junit('tests_devices.xml') if 'tests_devices' in ran else None) or {}
sync_case = [v for k, v in cases.items() if 'test_block_training_step_has_no_host_device_sync' in k]
syncs = [line[5:] for line in read('tests_devices.log').splitlines() if line.startswith('SYNC ')] if cases else []
if device != 'cuda':
    L.append('Not measured: no CUDA device.')
elif not sync_case or sync_case[0][0] in ('skipped', 'error'):
    L.append('Not measured: the test did not run' + (f' ({sync_case[0][1]})' if sync_case else '') + '.')
elif syncs:
    L += ['Each synchronising CUDA call (phase: innermost pyg_ple frame; innermost frame):', '']
    L += [f'- {s}' for s in syncs]
else:
    L.append(f"None (the test {sync_case[0][0]}): the step runs under `torch.cuda.set_sync_debug_mode('error')`.")
bench = [line for line in read('bench_digits.log').splitlines() if line.strip()] if 'bench_digits' in ran else []
if bench:
    L += ['', '### pyg-ple bench on digits (300 graphs, 2 folds, 2 epochs)', '', '```'] + bench[-14:] + ['```']
L.append('')
if not os.path.exists(md) or os.path.getmtime(md) < int(start):  # the speed stage wrote nothing in this run
    md = os.path.join(logs, 'gpu_check.md')
    L = ['# gpu_check.sh', '', '(the speed stage wrote no results: see gpu_check/speed.log)'] + L
with open(md, 'a') as fh:
    fh.write('\n'.join(L))
print(f'wrote {md}')
EOF
echo "results in $RESULTS ($NAME.md, .csv, .png), logs in $LOGS"
