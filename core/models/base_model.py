"""The base model: fetched from the Hub into the Hugging Face cache before SimpleTuner starts.

Left to itself, SimpleTuner downloads a 24 GB base model in silence and the job sits at "starting SimpleTuner" for
many minutes. On a machine that may download (TRAINER_ONLINE=1) this stage fetches it
first, with progress events, into the cache SimpleTuner reads (HF_HOME: on RunPod the network volume), so a second job
on the same volume downloads nothing. Only what diffusers' `from_pretrained` of the pipeline's components loads is
fetched: a diffusers repo also holds single-file checkpoints and fp16, ONNX, OpenVINO and Flax copies that would more
than double the download. Retries and errors are core/adapters/hub.py's, as in every stage that talks to the Hub.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import threading
from collections.abc import Callable, Collection
from pathlib import Path, PurePosixPath
from typing import Any

from core.adapters import (
    RETRY,
    UNAVAILABLE,
    CancelFlag,
    HubTarget,
    RetryPolicy,
    SilentBar,
    call_hub,
    hub_endpoint,
    hub_error,
    is_hub_model_id,
    is_offline,
    stop_error,
)
from core.errors import ErrorCode, JobError, ModelDownloadError
from core.events import DownloadProgress, EventSink, JobWarning, LogLine, ignore_event
from core.result import human_size
from core.settings import Settings
from core.spec import JobSpec

# The config flags naming Hub repos that SimpleTuner loads, and the job field a user set each through.
MODEL_FLAGS = {"pretrained_model_name_or_path": "config.model_name", "pretrained_vae_model_name_or_path": "config.vae"}
POLL_S = 0.5
"""Progress events at most twice a second."""
WEIGHT_NAMES = frozenset({"diffusion_pytorch_model", "model", "pytorch_model"})
"""The weight files diffusers and transformers load from a component folder (shards and variants included)."""
SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")
"""Configs and tokenizer files (vocab.json, merges.txt, spiece.model, tokenizer.json, ...)."""
SKIPPED_FOLDERS = frozenset({"onnx", "openvino", "flax", "tf", "coreml"})
SHARD = re.compile(r"-\d{5}-of-\d{5}")
INDEX = re.compile(r"^(?P<name>.+)\.(?P<format>safetensors|bin)\.index(?:\.(?P<variant>[\w-]+))?\.json$")
DISK_MARGIN = 1.02


# -- which files ----------------------------------------------------------------------------------------------------


def plan_model_files(files: list[str], *, components: Collection[str] | None = None,
                     variant: str | None = None) -> list[str]:
    """The files of a model repo that `from_pretrained` needs, from the repo's file list.

    A diffusers repo (model_index.json at its root): the root's json files and, in each component folder (those
    model_index.json names, when `components` is given; else every folder with a json file), its configs, tokenizer
    files and one set of weights: `variant` safetensors (config `variant`, e.g. fp16) if asked for and present, else
    the plain safetensors (shards with their index), else .bin. Never single-file checkpoints at the root, nor ONNX,
    OpenVINO, Flax or other formats. A single-component repo (a VAE: config.json and diffusers weights at the root)
    is read as one component folder; any other repo is a single-file model: every safetensors and json at its root.
    """
    folders: dict[str, list[str]] = {}
    for path in files:
        parent = str(PurePosixPath(path).parent)
        folders.setdefault("" if parent == "." else parent, []).append(PurePosixPath(path).name)
    root = folders.get("", [])
    if "model_index.json" in root:
        wanted = set(components) if components is not None else {
            folder for folder, names in folders.items()
            if folder and "/" not in folder and any(name.endswith(".json") for name in names)}
        plan = [name for name in root if name.endswith(".json")]
        for folder in sorted(wanted - SKIPPED_FOLDERS):
            plan += [f"{folder}/{name}" for name in _component_files(folders.get(folder, []), variant=variant)]
        return sorted(plan)
    if "config.json" in root and _pick_weights(root, variant=variant):
        return sorted(_component_files(root, variant=variant))
    return sorted(name for name in root if name.endswith((".safetensors", ".json")))


def _weight_kind(name: str) -> tuple[str, str | None] | None:
    """(format, variant) of a weight file or shard index diffusers/transformers load; None for anything else."""
    index = INDEX.match(name)
    if index:
        stem, fmt, variant = index["name"], index["format"], index["variant"]
    elif name.endswith((".safetensors", ".bin")):
        stem, _, fmt = name.rpartition(".")
        stem = SHARD.sub("", stem)
        stem, dot, variant = stem.partition(".")
        variant = variant if dot else None
    else:
        return None
    return (fmt, variant) if SHARD.sub("", stem) in WEIGHT_NAMES else None


def _pick_weights(names: list[str], *, variant: str | None) -> list[str]:
    kinds = {name: _weight_kind(name) for name in names}
    preference = [("safetensors", variant), ("safetensors", None), ("bin", variant), ("bin", None)]
    for kind in dict.fromkeys(preference):
        chosen = [name for name, found in kinds.items() if found == kind]
        if chosen:
            return chosen
    return []


def _component_files(names: list[str], *, variant: str | None) -> list[str]:
    support = [name for name in names if name.endswith(SUPPORT_SUFFIXES) and _weight_kind(name) is None]
    return support + _pick_weights(names, variant=variant)


# -- the stage --------------------------------------------------------------------------------------------------------


def hub_models(spec: JobSpec) -> list[tuple[str, str]]:
    """(job field, repo id) of each Hub repo the job's SimpleTuner config loads, the base model first. A local folder
    is none: an absolute path never looks like a repo id, and a relative one means nothing to SimpleTuner, which runs
    in the job's own folder."""
    found: list[tuple[str, str]] = []
    for flag, field in MODEL_FLAGS.items():
        value = spec.config.get(flag)
        if isinstance(value, str) and is_hub_model_id(value) and value not in (repo for _, repo in found):
            found.append((field, value))
    return found


def fetch_base_model(spec: JobSpec, *, settings: Settings, token: str | None, on_event: EventSink = ignore_event,
                     cancel: CancelFlag | None = None) -> Path | None:
    """Download the job's base model (and its VAE when the config names one on the Hub) into the Hugging Face cache;
    return the base model's snapshot folder, or None when nothing was to be fetched (offline settings, local folders).

    Raises ModelDownloadError naming the job field (config.model_name, config.vae, config.revision) with one of
    core/adapters/hub.py's codes, or the cancel's error (JobCancelled) when `cancel` is set while it downloads."""
    models = hub_models(spec)
    if not settings.online or not models:
        return None

    if is_offline():
        on_event(JobWarning("HF_HUB_OFFLINE is set in this process: the base model is not fetched ahead; SimpleTuner "
                            "loads it from the cache", field=models[0][0]))
        return None
    revision = str(spec.config.get("revision") or "main")  # SimpleTuner's --revision and --variant apply to both
    variant = str(spec.config["variant"]) if spec.config.get("variant") else None
    cache_dir = settings.hub_cache
    fetched = {repo: fetch_repo(repo, field=field, revision=revision, variant=variant, cache_dir=cache_dir,
                                token=token, on_event=on_event, cancel=cancel)
               for field, repo in models}
    return fetched.get(spec.base_model)


def fetch_repo(repo_id: str, *, field: str, cache_dir: Path, token: str | None, revision: str = "main",
               variant: str | None = None, on_event: EventSink = ignore_event, cancel: CancelFlag | None = None,
               endpoint: str | None = None, retry: RetryPolicy = RETRY) -> Path:
    """Bring the files `plan_model_files` picks from one model repo into `cache_dir` (the Hub cache layout, with
    refs/<revision>, which SimpleTuner's offline loading reads) and return the snapshot folder. Passing failures
    (network, 429, 5xx) are tried again as `retry` says; an unreachable Hub is no failure when an earlier job left
    every planned file in the cache."""
    repo = _CachedRepo(repo_id, field=field, cache_dir=cache_dir, token=token, revision=revision, variant=variant,
                       endpoint=endpoint or hub_endpoint(), retry=retry, cancel=cancel)
    on_event(LogLine(f"checking {repo_id} on the Hub"))
    try:
        commit = repo.retried(f"checking {repo_id}",
                              lambda: repo.api.model_info(repo_id, revision=revision).sha) or revision
        sizes = repo.files(commit)
        plan = repo.plan(commit, sizes)
    except JobError as error:
        offline_copy = repo.complete_copy() if error.code == UNAVAILABLE else None
        if offline_copy is None:
            raise
        on_event(LogLine(f"the Hub cannot be reached ({error.message}): using {repo_id} from the cache"))
        return offline_copy
    except Exception as exc:  # the cache's own failures (an unreadable listing), said the same way
        raise hub_error(exc, target=repo.target, what=f"checking {repo_id}") from None
    folder = repo.storage / "snapshots" / commit
    if not any(_weight_kind(PurePosixPath(path).name) or path.endswith(".safetensors") for path in plan):
        on_event(JobWarning(f"{repo_id} holds no weights in the layout diffusers loads (safetensors or bin): not "
                            "fetched ahead; SimpleTuner fetches what it needs", field=field))
        return folder
    missing = [path for path in plan if not repo.cached(path, commit)]
    if not missing:
        on_event(LogLine(f"{repo_id}: already in the cache ({human_size(sum(sizes[p] for p in plan))} in "
                         f"{len(plan)} files)"))
        ref = repo.storage / "refs" / revision
        if revision == commit or (ref.is_file() and ref.read_text().strip() == commit):
            return folder
    total = sum(sizes[path] for path in missing)
    if missing:
        _check_space(repo.storage, total, repo_id=repo_id, field=field)
        kept = len(plan) - len(missing) - len(repo.fetched_to_plan)  # left by earlier jobs, not fetched to plan
        on_event(LogLine(f"downloading {repo_id}: {human_size(total)} in {len(missing)} files"
                         + (f" ({kept} already in the cache)" if kept else "")))
    counter = _ByteCounter()

    def attempt() -> str:
        # Files finished before a failed attempt stay in the cache and are skipped; a partly downloaded one resumes
        # and reports its bytes again.
        counter.restart(done=sum(sizes[path] for path in missing if repo.cached(path, commit)))
        return repo.snapshot(plan, tqdm_class=counter.bar_class())

    def download() -> str:
        # On the download thread: no events (they belong to the caller's thread), and the abort flag, which the
        # caller sets when it stops, ends the waits between attempts.
        return call_hub(attempt, target=repo.target, what=f"downloading {repo_id}", retry=retry,
                        cancel=counter.abort)

    if not missing:
        return Path(download())  # only writes refs/<revision>: every file is there
    folder = _with_progress(download, source=repo_id, total=total, counter=counter, on_event=on_event,
                            cancel=cancel, stage=ModelDownloadError.stage)
    on_event(LogLine(f"{repo_id}: {human_size(total)} downloaded"))
    return folder


class _CachedRepo:
    """One model repo on the Hub and its place in the local cache."""

    def __init__(self, repo_id: str, *, field: str, cache_dir: Path, token: str | None, revision: str,
                 variant: str | None, endpoint: str, retry: RetryPolicy, cancel: CancelFlag | None):
        from huggingface_hub import HfApi
        from huggingface_hub.file_download import repo_folder_name

        self.repo_id, self.cache_dir, self.token = repo_id, cache_dir, token
        self.revision, self.variant, self.endpoint = revision, variant, endpoint
        self.retry, self.cancel = retry, cancel
        self.target = HubTarget(repo_id, family=ModelDownloadError, field=field, endpoint=endpoint, token=token,
                                revision=revision, revision_field="config.revision")
        self.api = HfApi(endpoint=endpoint, token=token)
        self.storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
        self.fetched_to_plan: list[str] = []

    def retried[T](self, what: str, call: Callable[[], T]) -> T:
        return call_hub(call, target=self.target, what=what, retry=self.retry, cancel=self.cancel)

    def cached(self, path: str, commit: str) -> bool:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.repo_id, path, cache_dir=self.cache_dir, revision=commit), str)

    def files(self, commit: str, *, online: bool = True) -> dict[str, int]:
        """path -> size at `commit`: the listing an earlier download cached, else the Hub's."""
        from huggingface_hub import RepoFile, get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            return {entry.path: entry.size or 0
                    for entry in get_cached_repo_tree(self.repo_id, revision=commit, cache_dir=self.cache_dir)}
        except CachedRepoTreeNotFoundError:
            if not online:
                raise
        listing = self.retried(f"listing the files of {self.repo_id}",
                               lambda: list(self.api.list_repo_tree(self.repo_id, revision=commit, recursive=True)))
        return {entry.path: entry.size or 0 for entry in listing if isinstance(entry, RepoFile)}

    def plan(self, commit: str, sizes: dict[str, int], *, online: bool = True) -> list[str]:
        components = None
        if "model_index.json" in sizes:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache

            index = try_to_load_from_cache(self.repo_id, "model_index.json", cache_dir=self.cache_dir,
                                           revision=commit)
            if not isinstance(index, str) and online:
                index = self.retried(f"reading {self.repo_id}'s model_index.json",
                                     lambda: hf_hub_download(self.repo_id, "model_index.json", revision=commit,
                                                             cache_dir=self.cache_dir, endpoint=self.endpoint,
                                                             token=self.token))
                self.fetched_to_plan.append("model_index.json")
            components = pipeline_components(Path(index)) if isinstance(index, str) else None
        return plan_model_files(list(sizes), components=components, variant=self.variant)

    def snapshot(self, plan: list[str], *, tqdm_class: type) -> str:
        from huggingface_hub import snapshot_download

        # The branch name, not the commit: snapshot_download then writes refs/<revision>, which SimpleTuner's
        # offline loading of the repo id resolves. Files already in the cache cost no request.
        return snapshot_download(self.repo_id, revision=self.revision, allow_patterns=[glob.escape(p) for p in plan],
                                 token=self.token, endpoint=self.endpoint, cache_dir=self.cache_dir,
                                 tqdm_class=tqdm_class)

    def complete_copy(self) -> Path | None:
        """The snapshot an earlier job left for the revision, when it holds every planned file; else None."""
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        ref = self.storage / "refs" / self.revision
        commit = ref.read_text().strip() if ref.is_file() else self.revision
        try:
            plan = self.plan(commit, self.files(commit, online=False), online=False)
        except (CachedRepoTreeNotFoundError, OSError):
            return None
        complete = plan and all(self.cached(path, commit) for path in plan)
        return self.storage / "snapshots" / commit if complete else None


def pipeline_components(model_index: Path) -> list[str] | None:
    """The component folders a diffusers model_index.json names (entries like ["diffusers", "UNet2DConditionModel"];
    [null, null] ones are absent); None when the file does not read."""
    try:
        index = json.loads(model_index.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    return [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)
            and len(value) == 2 and all(isinstance(part, str) for part in value)]


def _check_space(storage: Path, needed: int, *, repo_id: str, field: str) -> None:
    existing = next((folder for folder in (storage, *storage.parents) if folder.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    if free < needed * DISK_MARGIN:
        raise ModelDownloadError(f"not enough disk space for {repo_id} in {existing}: {human_size(needed)} to "
                                 f"download, {human_size(free)} free (point HF_HOME at a larger volume)",
                                 field=field, code=ErrorCode.MODEL_DISK_FULL)


# -- progress ---------------------------------------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised inside the download threads to stop them (a cancel, or a failing event sink)."""


class _ByteCounter:
    """Totals the bytes snapshot_download reports through its progress bars; stops its downloads on `abort`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.bars: list[Any] = []
        self.base = 0

    @property
    def done(self) -> int:
        # Its byte bars (bytes received, bytes written) count the same bytes over HTTP; the larger is the news.
        with self.lock:
            return self.base + max((bar.n for bar in self.bars), default=0)

    def restart(self, *, done: int) -> None:
        """A new attempt: `done` bytes are in the cache already; its bars count the rest."""
        with self.lock:
            self.bars, self.base = [], done

    def bar_class(self) -> type:
        counter = self

        class Bar(SilentBar):
            """snapshot_download's bars: its byte bars are counted; any bar stops at `abort`."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                if kwargs.get("unit") == "B":
                    with counter.lock:
                        counter.bars.append(self)

            def update(self, n: float | None = 1) -> None:
                if counter.abort.is_set():
                    raise _Stopped("download stopped")
                with counter.lock:
                    super().update(n)

        return Bar


def _with_progress(download: Callable[[], str], *, source: str, total: int, counter: _ByteCounter,
                   on_event: EventSink, cancel: CancelFlag | None, stage: str) -> Path:
    """Run `download` on a thread while this one reports its progress (so events reach the sink on the caller's
    thread, where the worker turns a cancel into an exception); a cancel or a failing sink stops the download."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            outcome["folder"] = download()
        except BaseException as exc:  # handed to the caller's thread, which raises it
            outcome["error"] = exc

    def stop_if_cancelled() -> None:
        if cancel is not None and cancel.is_set():
            raise stop_error(cancel, doing=f"while downloading {source}", stage=stage)

    stop_if_cancelled()
    worker = threading.Thread(target=body, name=f"download {source}", daemon=True)
    on_event(DownloadProgress(source=source, bytes_done=0, bytes_total=total))
    worker.start()
    reported = 0
    try:
        while worker.is_alive():
            worker.join(POLL_S)
            stop_if_cancelled()
            done = min(counter.done, total)
            if worker.is_alive() and done != reported:
                on_event(DownloadProgress(source=source, bytes_done=done, bytes_total=total))
                reported = done
    except BaseException:
        counter.abort.set()
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    on_event(DownloadProgress(source=source, bytes_done=total, bytes_total=total))
    return Path(outcome["folder"])
