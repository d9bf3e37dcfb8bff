#!/bin/bash
# Queue the extraction array and, after it, the merge:
#   FEATPIPE_DATA=/shared/data/imagenet FEATPIPE_BACKBONE=keras:ResNet50 FEATPIPE_CACHE_DIR=/shared/cache \
#       examples/slurm/submit.sh 16
# The argument is the number of array tasks (shards; default 8). sbatch options given after it go to both jobs
# (e.g. --partition=gpu --account=vision).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
tasks="${1:-8}"
shift || true

array_job="$(sbatch --parsable --array="0-$((tasks - 1))" "$@" "$here/extract_array.sbatch")"
array_job="${array_job%%;*}"  # --parsable prints "jobid[;cluster]"
merge_job="$(sbatch --parsable --dependency="afterok:$array_job" --kill-on-invalid-dep=yes "$@" \
    "$here/merge.sbatch")"
echo "extraction: job array $array_job ($tasks tasks); merge: job ${merge_job%%;*}, after every task succeeded"
