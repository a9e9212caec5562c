#!/usr/bin/env bash
# Start one face of the trainer: the Gradio UI (a RunPod pod) or the RunPod serverless worker.
#
#   start.sh [ui|worker|auto] [ARGS...]   ARGS pass through to the face (e.g. runpod's --rp_serve_api, --test_input)
#   start.sh health                        the image's HEALTHCHECK: the UI answers on its port (a worker always passes)
#
# The face: the first argument, else MODE, else auto (worker when RunPod serverless variables are present).
# Works in the image (/opt/venv, /opt/venv-trainer) and in a checkout (.venv, .venv-trainer next to this file).
# Environment (all optional):
#   MODE             ui | worker | auto (default auto)
#   APP_VENV         the app env (default /opt/venv if present, else <checkout>/.venv)
#   TRAINER_VENV     the trainer env (default /opt/venv-trainer if present, else <checkout>/.venv-trainer)
#   ALLOW_CPU=1      run without a GPU (the CPU demo); TRAINER_DEVICE=cpu does the same, TRAINER_DEVICE=cuda forbids it
#   HF_HOME          the Hugging Face cache (default $RUNPOD_VOLUME/huggingface-cache if that volume exists,
#                    else $WORKSPACE_DIR/huggingface if writable, else <checkout>/data/huggingface)
#   RUNPOD_VOLUME    where a RunPod network volume mounts (default /runpod-volume); it counts as one only when a
#                    network filesystem is mounted there (MOUNTINFO), not when it is a folder or RunPod's model cache
#   MOUNTINFO        the mount table read for that (default /proc/self/mountinfo)
#   WORKSPACE_DIR    the pod's workspace (default /workspace)
#   PORT             the UI port when GRADIO_SERVER_PORT is unset
#   START_DRY_RUN=1  print the resolved settings and the command, and exit without starting anything
#   START_FACE_FILE  where the started face is recorded for `start.sh health` (default /tmp/start-sh.face)
# At start it prints one block of `start.sh:` lines on stderr (RunPod's logs show it): the face, the GPU and its driver,
# the versions, where the model cache is, which storage outlives the pod, and which secrets are set (never their
# values).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

die() {
    local code="$1"
    shift
    printf 'start.sh: %s\n' "$*" >&2
    exit "$code"
}

note() {
    printf 'start.sh: %s\n' "$*" >&2
}

truthy() {
    case "${1,,}" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

usage() {
    # The comment block at the top of this file, up to `set -euo pipefail`.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

# The image's fixed path when it exists, else the checkout's.
default_venv() {
    local image_path="$1" checkout_path="$2"
    if [[ -x "$image_path/bin/python" ]]; then
        printf '%s\n' "$image_path"
    else
        printf '%s\n' "$checkout_path"
    fi
}

resolve_face() {
    local requested="$1"
    case "$requested" in
        ui | worker) printf '%s\n' "$requested" ;;
        auto)
            # Only serverless workers get these; a pod (RUNPOD_POD_ID alone) gets the UI.
            if [[ -n "${RUNPOD_ENDPOINT_ID:-}" || -n "${RUNPOD_WEBHOOK_GET_JOB:-}" ]]; then
                printf 'worker\n'
            else
                printf 'ui\n'
            fi
            ;;
        *) die 2 "MODE must be ui, worker or auto, got '$requested'" ;;
    esac
}

# RunPod's network volume keeps downloaded base models between runs (and holds RunPod's own model cache);
# else the pod's /workspace volume; else, in a checkout, the checkout's data folder.
resolve_hf_home() {
    local volume="${RUNPOD_VOLUME:-/runpod-volume}" workspace="${WORKSPACE_DIR:-/workspace}"
    if [[ -n "${HF_HOME:-}" ]]; then
        printf '%s\n' "$HF_HOME"
    elif [[ -d "$volume" ]]; then
        printf '%s\n' "$volume/huggingface-cache"
    elif [[ -d "$workspace" && -w "$workspace" ]]; then
        printf '%s\n' "$workspace/huggingface"
    else
        printf '%s\n' "$ROOT/data/huggingface"
    fi
}

# The filesystem type mounted exactly at the folder (the last such mount wins); fails when the folder is no mount
# point. The same rule as core/settings.py's mount_at.
mount_type() {
    local folder="$1"
    [[ -r "${MOUNTINFO:-/proc/self/mountinfo}" ]] || return 1
    awk -v want="$folder" '
        function unescape(s,  out, i) {
            out = ""
            while ((i = match(s, /\\[0-7][0-7][0-7]/)) > 0) {
                out = out substr(s, 1, i - 1) sprintf("%c", (substr(s, i + 1, 1) * 64) + (substr(s, i + 2, 1) * 8) + substr(s, i + 3, 1))
                s = substr(s, i + 4)
            }
            return out s
        }
        {
            for (i = 7; i <= NF; i++) if ($i == "-") break
            if (i < NF && unescape($5) == want) found = $(i + 1)
        }
        END { if (found == "") exit 1; print found }
    ' "${MOUNTINFO:-/proc/self/mountinfo}"
}

# A network filesystem (core/settings.py's NETWORK_FILESYSTEMS, and every fuse.* such as MooseFS's fuse.mfs).
network_filesystem() {
    case "$1" in
        nfs | nfs4 | cifs | smb3 | smbfs | ceph | glusterfs | lustre | gpfs | beegfs | 9p | virtiofs | fuse | fuseblk | fuse.*) return 0 ;;
        *) return 1 ;;
    esac
}

# The start-up line that says which storage outlives the pod (core/settings.py's Storage.line says the same).
storage_line() {
    local volume="$1" fstype
    if fstype="$(mount_type "$volume")"; then
        if network_filesystem "$fstype"; then
            printf 'Storage: %s is a network volume (%s, persistent): the cache and kept outputs go there\n' "$volume" "$fstype"
            return 0
        fi
        printf 'Storage: no network volume: %s is a mount of this machine'"'"'s disk (%s), not a network volume; outputs not published are lost when the pod or worker stops\n' "$volume" "$fstype"
    elif [[ -d "$volume" ]]; then
        printf 'Storage: no network volume: %s is a folder of the container'"'"'s disk, not a network volume; outputs not published are lost when the pod or worker stops\n' "$volume"
    else
        printf 'Storage: no network volume; outputs not published are lost when the pod or worker stops\n'
    fi
}

# Prints the GPU names, one a line; fails when there is none (no driver, no nvidia-smi, or a broken one).
gpu_names() {
    local names
    command -v nvidia-smi >/dev/null 2>&1 || return 1
    names="$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" || return 1
    [[ -n "$names" ]] || return 1
    printf '%s\n' "$names"
}

# Sets DEVICE_NOTE; exits with a clear message when the face would run without the GPU it needs.
check_gpu() {
    local device="${TRAINER_DEVICE:-auto}" names
    device="${device,,}"
    if names="$(gpu_names)"; then
        DEVICE_NOTE="gpu=$(paste -sd ',' <<<"$names")"
        return 0
    fi
    if [[ "$device" == "cuda" ]]; then
        die 3 "TRAINER_DEVICE=cuda but no NVIDIA GPU was found (nvidia-smi lists none). Run on a GPU machine, or unset TRAINER_DEVICE and set ALLOW_CPU=1 for the CPU demo."
    fi
    if truthy "${ALLOW_CPU:-}" || [[ "$device" == "cpu" ]]; then
        DEVICE_NOTE="gpu=none (CPU allowed: demo only, training a real model on CPU is impractically slow)"
        return 0
    fi
    die 3 "no NVIDIA GPU found (nvidia-smi missing or lists no GPU). This trainer needs a CUDA GPU: on RunPod choose a GPU pod or endpoint and check the host's driver supports the image's CUDA. To run the small CPU demo anyway, set ALLOW_CPU=1 (or TRAINER_DEVICE=cpu)."
}

# A package's version from its dist-info folder in a venv (no Python started: this runs on every start).
dist_version() {
    local venv="$1" name="$2" info
    for info in "$venv"/lib/python3*/site-packages/"$name"-*.dist-info; do
        [[ -d "$info" ]] || continue
        info="${info##*/}"
        info="${info#"$name"-}"
        printf '%s\n' "${info%.dist-info}"
        return 0
    done
    printf 'absent\n'
}

# The CUDA version torch was built for ('cpu' for a CPU build, 'absent' without torch).
torch_cuda() {
    local file cuda
    for file in "$1"/lib/python3*/site-packages/torch/version.py; do
        [[ -f "$file" ]] || continue
        cuda="$(sed -n "s/^cuda[^=]*= '\([0-9.]*\)'.*/\1/p" "$file")"
        printf '%s\n' "${cuda:-cpu}"
        return 0
    done
    printf 'absent\n'
}

venv_python() {
    local version=""
    [[ -f "$1/pyvenv.cfg" ]] && version="$(sed -n 's/^version\(_info\)\{0,1\} *= *//p' "$1/pyvenv.cfg" | head -n 1)"
    printf '%s\n' "${version:-absent}"
}

# major.minor as one comparable number (13.0 -> 13000).
version_number() {
    local major="${1%%.*}" minor="${1#*.}"
    minor="${minor%%.*}"
    printf '%d\n' "$((10#${major:-0} * 1000 + 10#${minor:-0}))"
}

# Free space where the folder is (or would be: its nearest existing parent).
free_space() {
    local folder="$1"
    while [[ ! -d "$folder" && "$folder" == */* ]]; do
        folder="${folder%/*}"
    done
    df -h --output=avail "${folder:-/}" 2>/dev/null | tail -n 1 | tr -d ' ' || printf '?\n'
}

is_set() {
    if [[ -n "${!1:-}" ]]; then printf 'set'; else printf 'not set'; fi
}

# One block of lines at start, for the pod's or worker's log: what runs, on what, and where its cache is.
startup_report() {
    local face="$1" line volume="${RUNPOD_VOLUME:-/runpod-volume}" workspace="${WORKSPACE_DIR:-/workspace}"
    local gpus driver_cuda torch_build cache_note secrets
    torch_build="$(torch_cuda "$TRAINER_VENV")"
    note "---- SimpleTuner LoRA trainer ${IMAGE_VERSION:-(checkout)} ----"
    note "face=$face (python -m $([[ "$face" == ui ]] && printf app || printf worker))"
    if gpus="$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)" &&
        [[ -n "$gpus" ]]; then
        # The driver's CUDA version is only in nvidia-smi's banner.
        driver_cuda="$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)"
        while read -r line; do
            note "gpu=$line"
        done < <(sort <<<"$gpus" | uniq -c | sed 's/^ *\([0-9]*\) \(.*\), \([^,]*\)$/\2 (x\1), driver \3/')
        note "driver_cuda=${driver_cuda:-?} (the image's torch needs CUDA $torch_build)"
        if [[ -n "${driver_cuda:-}" && "$torch_build" =~ ^[0-9]+\.[0-9]+$ ]] &&
            (($(version_number "$driver_cuda") < $(version_number "$torch_build"))); then
            note "warning: this driver supports CUDA $driver_cuda but torch is built for CUDA $torch_build: training will fail here. Choose a host whose driver supports CUDA $torch_build or newer (on RunPod: allowedCudaVersions)."
        fi
    else
        note "$DEVICE_NOTE"
    fi
    note "versions: simpletuner=$(dist_version "$TRAINER_VENV" simpletuner) torch=$(dist_version "$TRAINER_VENV" torch) torch_cuda=$torch_build runpod=$(dist_version "$APP_VENV" runpod) gradio=$(dist_version "$APP_VENV" gradio) python=$(venv_python "$APP_VENV")"
    if [[ "$HF_HOME" == "$volume"/* ]] && network_filesystem "$(mount_type "$volume" || true)"; then
        cache_note="network volume: base models stay for the next job"
    elif [[ "$HF_HOME" == "$volume"/* ]]; then
        cache_note="RunPod's model cache folder, no network volume: base models downloaded there go with the worker"
    elif [[ "$HF_HOME" == "$workspace"/* ]]; then
        cache_note="the pod's volume: base models stay while it does"
    else
        cache_note="no volume: base models are downloaded again after a restart"
    fi
    note "hf_home=$HF_HOME ($cache_note; $(free_space "$HF_HOME") free)"
    note "$(storage_line "${VOLUME_DIR:-$volume}")"
    note "data_dir=${DATA_DIR:-$ROOT/data} app_venv=$APP_VENV trainer_venv=$TRAINER_VENV"
    secrets="HF_TOKEN $(is_set HF_TOKEN), BUCKET_ACCESS_KEY_ID $(is_set BUCKET_ACCESS_KEY_ID), BUCKET_SECRET_ACCESS_KEY $(is_set BUCKET_SECRET_ACCESS_KEY)"
    if [[ "$face" == "ui" ]]; then
        note "ui=http://${GRADIO_SERVER_NAME:-127.0.0.1}:${GRADIO_SERVER_PORT:-7860}"
        secrets+=", UI_PASSWORD $(is_set UI_PASSWORD), UI_AUTH $(is_set UI_AUTH)"
    fi
    note "secrets (values never shown): $secrets"
    note "----"
}

health() {
    local face_file="${START_FACE_FILE:-/tmp/start-sh.face}" face port
    # The face recorded at start wins (it may have come from an argument); else the same rule as at start.
    if [[ -s "$face_file" ]]; then
        face="$(<"$face_file")"
    else
        face="$(resolve_face "${MODE:-auto}")"
    fi
    # The worker has no port to ask: RunPod watches its job loop, and the process being alive is the check.
    [[ "$face" == "worker" ]] && exit 0
    port="${GRADIO_SERVER_PORT:-${PORT:-7860}}"
    exec "$APP_VENV/bin/python" -I -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=8) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"health: {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
' "http://127.0.0.1:$port/"
}

main() {
    local requested="${MODE:-auto}"
    case "${1:-}" in
        ui | worker | auto)
            requested="$1"
            shift
            ;;
        health)
            shift
            APP_VENV="${APP_VENV:-$(default_venv /opt/venv "$ROOT/.venv")}"
            health
            ;;
        -h | --help | help)
            usage
            exit 0
            ;;
    esac

    local face
    face="$(resolve_face "$requested")"

    export APP_VENV="${APP_VENV:-$(default_venv /opt/venv "$ROOT/.venv")}"
    export TRAINER_VENV="${TRAINER_VENV:-$(default_venv /opt/venv-trainer "$ROOT/.venv-trainer")}"
    [[ -x "$APP_VENV/bin/python" ]] || die 1 "APP_VENV=$APP_VENV has no bin/python: run 'make setup' in a checkout, or set APP_VENV"
    [[ -x "$TRAINER_VENV/bin/python" ]] ||
        note "warning: TRAINER_VENV=$TRAINER_VENV has no bin/python: training will fail until 'make setup' (or set TRAINER_VENV)"

    export HF_HOME
    HF_HOME="$(resolve_hf_home)"
    # Off the network for analytics and telemetry; downloads of base models stay allowed.
    export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
    export HF_HUB_DISABLE_TELEMETRY="${HF_HUB_DISABLE_TELEMETRY:-1}"
    export PYTHONUNBUFFERED="${PYTHONUNBUFFERED:-1}"
    # -P keeps the current directory off sys.path, so the faces come from this checkout wherever we are started.
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    if [[ "$face" == "ui" && -n "${PORT:-}" && -z "${GRADIO_SERVER_PORT:-}" ]]; then
        export GRADIO_SERVER_PORT="$PORT"
    fi

    DEVICE_NOTE=""
    check_gpu

    local module="$face"
    [[ "$face" == "ui" ]] && module="app"
    local command=("$APP_VENV/bin/python" -P -m "$module" "$@")
    if truthy "${START_DRY_RUN:-}"; then
        startup_report "$face"
        printf 'MODE=%s\n' "$face"
        printf 'APP_VENV=%s\n' "$APP_VENV"
        printf 'TRAINER_VENV=%s\n' "$TRAINER_VENV"
        printf 'HF_HOME=%s\n' "$HF_HOME"
        printf 'DEVICE=%s\n' "$DEVICE_NOTE"
        printf 'GRADIO_SERVER_PORT=%s\n' "${GRADIO_SERVER_PORT:-}"
        printf 'EXEC='
        printf '%q ' "${command[@]}"
        printf '\n'
        exit 0
    fi

    mkdir -p "$HF_HOME" || die 1 "cannot create HF_HOME=$HF_HOME: set HF_HOME to a writable folder"
    printf '%s\n' "$face" >"${START_FACE_FILE:-/tmp/start-sh.face}" ||
        note "warning: cannot write START_FACE_FILE=${START_FACE_FILE:-/tmp/start-sh.face}; 'start.sh health' will guess the face"
    startup_report "$face"
    # exec: the face becomes this process, so the container's stop signal (SIGTERM) reaches it directly.
    exec "${command[@]}"
}

main "$@"
