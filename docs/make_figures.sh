#!/usr/bin/env bash
# Regenerates every figure of docs/tutorial.md and docs/tutorial.ko.md with the tutorial's own
# commands at full size (about 15 minutes on a 2-core CPU), in a scratch folder, and copies
# them into docs/figures/. Run from the repository root:
#     VAEKIT_DATA_DIR=../shared/data bash docs/make_figures.sh [SCRATCH]
set -euo pipefail
root=$(pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
v() { echo "\$ vaekit $*" >&2; python3 -m vaekit "$@"; }
# a run folder that exists already is kept (a finished run of the same command, or
# `vaekit train --resume` it first): the script then only remakes what is missing
t() { local out="${@: -1}"; [ -f "$out/summary.json" ] || v train "$@"; }

t --preset swiss-roll --out runs/swiss
v encode runs/swiss --out runs/swiss/codes.npz
v gmm runs/swiss/codes.npz --components 7 --out runs/em
t --out runs/first
t --preset latent-2d --out runs/2d
v sample runs/2d --sampler class:1 -n 16 --out runs/ones-region.png
t --preset digits-cvae --out runs/cvae
v sample runs/cvae --label 1 -n 16 --out runs/ones-cvae.png
t --data fashion-mnist --epochs 30 --set data.max_train=20000 --set train.threads=1 --importance-samples 200 --out runs/fashion
v diagnose runs/fashion --examples 50 --ood default
v report runs/fashion

f="$root/docs/figures"
cp runs/swiss/figures/data_latent.png "$f/swiss-roll.png"
cp runs/em/mixture_fit.png "$f/em-fit.png"
cp runs/em/log_likelihood.png "$f/em-log-likelihood.png"
cp runs/first/figures/curves.png "$f/elbo-curves.png"
cp runs/2d/figures/latent.png "$f/mnist-latent.png"
cp runs/2d/figures/manifold.png "$f/mnist-manifold.png"
cp runs/ones-region.png "$f/ones-region.png"
cp runs/ones-cvae.png "$f/ones-cvae.png"
cp runs/fashion/figures/diagnose_ood.png "$f/ood.png"
cp runs/fashion/figures/diagnose_prior_vs_gmm.png "$f/prior-holes.png"
echo "figures in $f (runs in $work)"
