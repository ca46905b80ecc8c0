#!/usr/bin/env bash
# vaekit on one NVIDIA GPU, about 5 minutes: every CUDA path once, and what it costs.
# Run from the repository root on a machine with a GPU (e.g. through the device tool):
#     bash benchmarks/gpu_smoke.sh            # logs and the summary under $OUT (or /tmp/vk)
# Prints one line per check (its exit status and last lines), then the numbers that go into
# benchmarks/RESULTS.md: host syncs per training step, images per second CPU against GPU at
# batch 128 and 1024, evaluation time, GaussianMixture CPU against GPU. Also runs the test
# suite's CUDA tests (they skip without a GPU).
set -u
O=${OUT:-/tmp/vk}; R=/tmp/vkruns; rm -rf "$R"; mkdir -p "$O" "$R"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
V="python3 -m vaekit"; Q="--quiet --importance-samples 10 --no-report"
t() { local n=$1; shift; echo "== $n"; timeout 300 "$@" >"$O/$n.log" 2>&1; echo "   rc=$? $(grep -v '^warning' "$O/$n.log" | tail -n 3 | tr '\n' '|' | cut -c1-400)"; }
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
# synthetic 28x28 data, 20,000 images (no download)
python3 -c "import numpy as n; r=n.random.default_rng(0); c=r.random((10,784)); y=r.integers(0,10,20000); n.savez('$R/syn.npz', x=n.clip(c[y]+.1*r.standard_normal((20000,784)),0,1).reshape(-1,28,28).astype('f4'), y=y)"

t train $V train --data digits --device cuda --epochs 5 --out "$R/a" --quiet   # train, K=1000 on cuda, report
for p in fp16 bf16; do t "$p" $V train --data digits --device cuda --epochs 3 --out "$R/$p" $Q --set train.precision=\"$p\"; done
t fp16-part $V train --data digits --device cuda --epochs 2 --out "$R/fp16p" $Q --set train.precision=\"fp16\"
t fp16-resume $V train --resume "$R/fp16p" --epochs 3 $Q
t straight $V train --data digits --device cuda --epochs 6 --out "$R/s" $Q
t part $V train --data digits --device cuda --epochs 3 --out "$R/p" $Q
t resume $V train --resume "$R/p" --epochs 6 $Q
python3 - "$R" <<'EOF'
import sys
from safetensors.torch import load_file as L
R = sys.argv[1]
for a, b, what in (("s", "p", "fp32"), ("fp16", "fp16p", "fp16")):
    x, y = L(f"{R}/{a}/checkpoints/latest.safetensors"), L(f"{R}/{b}/checkpoints/latest.safetensors")
    print(f"cuda {what} resume bit-identical:", all(bool((x[k] == y[k]).all()) for k in x if k.startswith("model.")))
EOF
t tocpu $V train --resume "$R/p" --epochs 7 --device cpu $Q        # a CUDA checkpoint goes on on the CPU
t eval $V evaluate "$R/a" --device cuda -k 1000 --json
t evalauto $V evaluate "$R/a" --device auto -k 10
t evalcpu $V evaluate "$R/a" --device cpu -k 1000 --json
python3 -c "import json; a, b = (json.loads(open('$O/' + n + '.log').read().strip().splitlines()[-1]) for n in ('eval', 'evalcpu')); print('log p(x) cuda %.5f cpu %.5f (same seed; equal up to float rounding); evaluation %.1f s cuda, %.1f s cpu' % (a['log_px'], b['log_px'], a['seconds'], b['seconds']))"
t sample $V sample "$R/a" --sampler gmm -n 16 --out "$R/smp.png"
t class $V sample "$R/a" --sampler class:3 -n 16 --out "$R/cls.png"
t report $V report "$R/a"
cat > "$R/probe.py" <<'EOF'
import sys, time, warnings, collections, numpy as np, torch
from vaekit import config as C, explore
from vaekit.runs import train_and_evaluate; from vaekit.rundir import load_run
from vaekit.mixture import GaussianMixture
sites = collections.Counter(); warnings.simplefilter("always")
warnings.showwarning = lambda m, c, f, l, *a, **k: sites.update([f"{f.split('/')[-1]}:{l}"]) if "synchroniz" in str(m) else None
cfg = C.resolve(None, None, [{"data": {"name": "digits"}, "train": {"device": "cuda", "epochs": 2, "progress": False},
                              "report": {"enabled": False}, "eval": {"importance_samples": 10}}])
torch.cuda.set_sync_debug_mode("warn"); s = train_and_evaluate(cfg, sys.argv[1] + "/sync"); torch.cuda.set_sync_debug_mode(0)
print("steps", s["steps"], "host syncs", sum(sites.values()), "(%.2f per step)" % (sum(sites.values()) / s["steps"]),
      "by line:", sites.most_common(8))
X = np.random.default_rng(0).standard_normal((200_000, 10)); X[:100_000] += 3
for dev in ("cpu", "cuda"):
    t0 = time.perf_counter(); g = GaussianMixture(10, device=dev, random_state=0, max_iter=30, tol=0).fit(X)
    print(dev, "GMM %.2f s" % (time.perf_counter() - t0), "ll %.6f" % g.lower_bound_, g.means_.device)
print("explore, cuda model:", explore.sample(load_run(sys.argv[1] + "/a", device="cuda"), 8, "gmm")[0].shape)
EOF
t probe python3 "$R/probe.py" "$R"; grep -E "^(steps|cpu|cuda|explore)" "$O/probe.log"
# NCCL with more processes than GPUs: one clear error line expected (rc 2), not "invalid device ordinal"
n=$(python3 -c "import torch; print(torch.cuda.device_count() + 1)")
t nccl-too-many timeout 120 torchrun --standalone --nproc_per_node="$n" -m vaekit train --data digits --device cuda --epochs 2 --out "$R/nccl" $Q
t ddp-gloo timeout 180 torchrun --standalone --nproc_per_node=2 -m vaekit train --data digits --device cuda --epochs 3 --out "$R/ddp" $Q --set train.backend=\"gloo\"
t one $V train --data digits --device cuda --epochs 3 --out "$R/one" $Q
for r in one ddp; do echo "$r: $(tail -n1 "$R/$r/metrics.jsonl" | cut -c1-150)"; done
echo "== images per second (synthetic 28x28, dynamic binarisation, 3 epochs; the last epoch's)"
for d in "cpu 128" "cuda 128" "cuda 1024"; do set -- $d
  $V train --data "$R/syn.npz" --device "$1" --batch-size "$2" --epochs 3 --out "$R/tp-$1-$2" $Q --set data.binarize=\"dynamic\" >/dev/null 2>&1
  python3 -c "import json; r=[json.loads(l) for l in open('$R/tp-$1-$2/metrics.jsonl')]; print('$1 batch $2: %.0f images/s' % r[-1]['images_per_second'])"; done
echo "== CUDA tests of the suite"
python3 -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 | tail -n 3
