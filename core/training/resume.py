"""Resume: bring a SimpleTuner `checkpoint-N` folder from where an earlier job left it into this job's output folder.

A job's `resume_from` names one of:
- a Hub repo path: `user/repo/checkpoint-N` or `hf://user/repo/checkpoint-N` (`user/repo@revision/...` pins a
  revision; `user/repo` alone means its latest checkpoint folder; `user/repo/path/ckpt.zip` an archive in the repo);
- `s3://bucket/prefix/checkpoint-N`: a folder, as this worker's storage upload leaves it (a prefix above checkpoint
  folders means the latest of them), or `s3://bucket/key.zip` (or .tar, .tar.gz, ...): an archive;
- an http(s) URL of a zip or tar archive holding one checkpoint folder.

The checkpoint lands as `output_dir/checkpoint-N`, so SimpleTuner's `--resume_from_checkpoint latest` continues it
(optimizer, scheduler, step count and random state). Its per-dataset sampler state (`training_state-<id>.json`) is
dropped: it lists the absolute image paths of the job that saved it, which SimpleTuner refuses in a new job
("An image was discovered ... that did not have its metadata"); the resumed run starts a fresh pass over the data.

The Hub and S3 clients, their retries and their error codes are core/adapters/hub.py's and core/adapters/s3.py's; a
failure there is a
ResumeError (field resume_from) with the same code as in any other stage.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from core.adapters import (
    ByteBar,
    CancelFlag,
    HubTarget,
    S3Config,
    call_hub,
    download,
    hub_endpoint,
    is_offline,
    is_repo_id,
    offline_error,
    public_url,
    s3_client,
    s3_error,
    s3_failures,
)
from core.cancel import Cancel
from core.dataset import ExtractLimits, archive_kind, extract_archive
from core.errors import AddressRefused, DownloadError, ErrorCode, JobError, ResumeError
from core.events import DownloadProgress, EventSink, JobWarning, LogLine, ignore_event
from core.outputs import (
    FETCHED_MARKER,
    LORA_FILE,
    SAMPLER_STATES,
    STATE_FILE,
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint_prefix,
    state_step,
)
from core.settings import Settings

FIELD = "resume_from"
# SimpleTuner's own list of weight files a resumable checkpoint holds (checkpoint_manager.validate_checkpoint).
WEIGHT_FILES = (LORA_FILE, "adapter_model.safetensors", "pytorch_model.bin",
                "model.safetensors", "diffusion_pytorch_model.safetensors")
# What a checkpoint folder holds; anything else in an archive is skipped.
CHECKPOINT_SUFFIXES = frozenset({".safetensors", ".bin", ".pkl", ".json", ".pt", ".pth", ".txt"})
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAX_DOWNLOAD_BYTES = 50 * 1024**3
STAGING_DIR = "_resume_download"


@dataclass(frozen=True)
class ResumeSource:
    kind: str
    """hub | s3 | url"""
    location: str
    """hub: 'user/repo'; s3: bucket; url: the URL."""
    path: str = ""
    """hub: a path in the repo ('' = the latest checkpoint); s3: the key or prefix."""
    revision: str = "main"

    @property
    def public(self) -> str:
        """How the source appears in events and errors: no query string, no credentials."""
        if self.kind == "hub":
            at = "" if self.revision == "main" else f"@{self.revision}"
            return f"hf://{self.location}{at}" + (f"/{self.path}" if self.path else "")
        if self.kind == "s3":
            return f"s3://{self.location}/{self.path}"
        return public_url(self.location)


def resume_error(message: str, *, code: ErrorCode = ErrorCode.RESUME_FAILED) -> ResumeError:
    return ResumeError(message, field=FIELD, code=code)


def parse_source(source: str) -> ResumeSource:
    """What `resume_from` names; a JobError naming the field when it names nothing we can fetch."""
    text = source.strip()
    if not text:
        raise resume_error("is empty: give a Hub path (user/repo/checkpoint-N), an s3:// or an https:// URL")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return ResumeSource("url", text)
    if scheme == "s3":
        url = urlsplit(text)
        key = url.path.lstrip("/")
        if not url.netloc or not key:
            raise resume_error(f"{public_url(text)}: give s3://bucket/prefix/checkpoint-N or s3://bucket/key.zip")
        return ResumeSource("s3", url.netloc, key)
    if scheme not in ("", "hf"):
        raise resume_error(f"'{scheme}://' is not a source we fetch: use a Hub path, s3:// or https://")
    rest = text.split("://", 1)[1] if scheme else text
    parts = [part for part in rest.split("/") if part]
    name, _, revision = parts[1].partition("@") if len(parts) > 1 else ("", "", "")
    repo = f"{parts[0]}/{name}" if parts else ""
    sub = "/".join(parts[2:])
    if rest.startswith("/") or not is_repo_id(repo) or any(part in (".", "..") for part in parts):
        raise resume_error(f"'{text}' is not a Hub repo path (user/repo or user/repo/checkpoint-N), nor an s3:// "
                           "or https:// URL")
    return ResumeSource("hub", repo, sub, revision or "main")


def fetch_checkpoint(source: str, output_dir: Path, *, settings: Settings, on_event: EventSink = ignore_event,
                     token: str | None = None,
                     max_bytes: int = MAX_DOWNLOAD_BYTES, cancel: CancelFlag | None = None) -> Path:
    """Fetch the checkpoint `source` names into `output_dir/checkpoint-N`; return that folder.

    `token` reads private Hub repos (the job's hub.token or HF_TOKEN); `settings.s3` reaches s3:// sources; a set
    `cancel` stops every download at its next chunk (or file) and the retries. Raises
    a JobError (field resume_from) naming what is missing or wrong."""
    where = parse_source(source)
    output_dir = Path(output_dir).absolute()
    staging = output_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    on_event(LogLine(f"fetching the checkpoint to resume from {where.public}"))
    try:
        if where.kind == "hub":
            fetched = _from_hub(where, staging, token=token, on_event=on_event, max_bytes=max_bytes,
                                cancel=cancel)
        elif where.kind == "s3" and not where.path.lower().endswith(ARCHIVE_SUFFIXES):
            fetched = _from_s3_folder(where, staging, config=settings.s3, on_event=on_event, max_bytes=max_bytes,
                                      bar=ByteBar(cancel, doing=f"fetching {where.public}", stage=ResumeError.stage))
        else:
            stop = cancel if isinstance(cancel, (Cancel, threading.Event)) else None
            archive = download(source.strip(), staging / "archive", settings=settings, on_event=on_event,
                               max_bytes=max_bytes, cancel=Cancel.of(stop), field=FIELD)
            fetched = _extract(archive, staging / "extracted", label=where.public)
        found, step = _locate(fetched, hint=where.path or urlsplit(where.location).path, label=where.public)
        target = _place(found, output_dir / checkpoint_name(step))
    except (AddressRefused, DownloadError) as error:
        raise resume_error(error.message, code=error.code) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    on_event(LogLine(f"resuming from {target.name} (step {step}) of {where.public}"))
    on_event(JobWarning(f"resuming from step {step}: the data order starts a new pass (SimpleTuner's sampler state "
                        "names the old job's files)", field=FIELD))
    return target


# -- sources -----------------------------------------------------------------------------------------------------


def _from_hub(where: ResumeSource, staging: Path, *, token: str | None, on_event: EventSink, max_bytes: int,
              cancel: CancelFlag | None) -> Path:
    from huggingface_hub import HfApi, RepoFile, hf_hub_download

    repo = where.location
    endpoint = hub_endpoint()
    target = HubTarget(repo, family=ResumeError, field=FIELD, endpoint=endpoint, token=token, revision=where.revision)
    if is_offline():
        raise offline_error(target, f"fetching {where.public}")
    api = HfApi(endpoint=endpoint, token=token)

    def hub[T](what: str, call: Callable[[], T]) -> T:
        return call_hub(call, target=target, what=what, cancel=cancel, on_event=on_event)

    commit = hub(f"reading {repo}", lambda: api.model_info(repo, revision=where.revision).sha) or where.revision
    files = [(entry.path, entry.size or 0)
             for entry in hub(f"listing the files of {repo}",
                              lambda: list(api.list_repo_tree(repo, revision=commit, recursive=True)))
             if isinstance(entry, RepoFile)]
    sub = where.path.strip("/")
    if sub.lower().endswith(ARCHIVE_SUFFIXES):
        chosen = [(path, size) for path, size in files if path == sub]
    else:
        if checkpoint_step(PurePosixPath(sub).name) is None:  # the repo, or a folder above checkpoints: the latest
            below = [path for path, _ in files if not sub or path.startswith(sub + "/")]
            sub = latest_checkpoint_prefix(below) or sub
        if not sub:
            raise resume_error(f"{repo} holds no checkpoint-N folder (publish with hub.include_checkpoints to "
                               "resume from it)", code=ErrorCode.RESUME_NOT_FOUND)
        chosen = [(path, size) for path, size in files if path.startswith(sub + "/")]
    if not chosen:
        raise resume_error(f"{repo} has no '{sub}'", code=ErrorCode.RESUME_NOT_FOUND)
    total = sum(size for _, size in chosen)
    if total > max_bytes:
        raise resume_error(f"{where.public}: {total} bytes is over the {max_bytes}-byte limit",
                           code=ErrorCode.DOWNLOAD_FAILED)
    done = 0
    on_event(DownloadProgress(source=where.public, bytes_done=0, bytes_total=total))
    bar = ByteBar(cancel, doing=f"fetching {where.public}", stage=ResumeError.stage)  # stops a file mid-way
    for path, size in chosen:
        hub(f"downloading {path}", partial(hf_hub_download, repo, path, revision=commit, local_dir=staging / "hub",
                                           endpoint=endpoint, token=token, tqdm_class=bar.bar_class()))
        done += size
        on_event(DownloadProgress(source=where.public, bytes_done=done, bytes_total=total))
    shutil.rmtree(staging / "hub" / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
    if sub.lower().endswith(ARCHIVE_SUFFIXES):
        return _extract(staging / "hub" / sub, staging / "extracted", label=where.public)
    return staging / "hub" / sub


def _from_s3_folder(where: ResumeSource, staging: Path, *, config: S3Config, on_event: EventSink,
                    max_bytes: int, bar: ByteBar) -> Path:
    """Every object of the checkpoint folder; `bar` stops it between files and, through boto3's byte callback,
    between chunks."""
    prefix = where.path.strip("/") + "/"
    try:
        client = s3_client(config)
        keys: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=where.location, Prefix=prefix):
            keys += [(item["Key"], int(item["Size"])) for item in page.get("Contents", [])]
        if not keys:
            raise resume_error(f"{where.public}: nothing there", code=ErrorCode.RESUME_NOT_FOUND)
        if checkpoint_step(PurePosixPath(prefix).name) is None:
            latest = latest_checkpoint_prefix(key[len(prefix):] for key, _ in keys)
            if latest is None and not any(key == prefix + STATE_FILE for key, _ in keys):
                raise resume_error(f"{where.public}: no checkpoint-N folder under this prefix",
                                   code=ErrorCode.RESUME_NOT_FOUND)
            if latest is not None:
                prefix += latest + "/"
                keys = [(key, size) for key, size in keys if key.startswith(prefix)]
        total = sum(size for _, size in keys)
        if total > max_bytes:
            raise resume_error(f"{where.public}: {total} bytes is over the {max_bytes}-byte limit",
                               code=ErrorCode.DOWNLOAD_FAILED)
        folder = staging / "s3" / PurePosixPath(prefix).name
        done = 0
        on_event(DownloadProgress(source=where.public, bytes_done=0, bytes_total=total))
        for key, size in keys:
            rel = PurePosixPath(key[len(prefix):])
            if not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
                continue  # an object name that is not a path inside the folder
            target = folder.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            bar.check()
            client.download_file(where.location, key, str(target), Callback=lambda _count: bar.check())
            done += size
            on_event(DownloadProgress(source=where.public, bytes_done=done, bytes_total=total))
    except s3_failures() as exc:
        raise s3_error(exc, family=ResumeError, where=where.public, field=FIELD, config=config,
                       bucket=where.location) from None
    return folder


def _extract(archive: Path, dest: Path, *, label: str) -> Path:
    if archive_kind(archive) is None:
        raise resume_error(f"{label}: not a zip or tar archive, nor a checkpoint folder")
    try:
        extract_archive(archive, dest, keep_suffixes=CHECKPOINT_SUFFIXES,
                        limits=ExtractLimits(max_total_bytes=MAX_DOWNLOAD_BYTES, max_files=10_000), label=label)
    except JobError as error:
        raise resume_error(error.message, code=error.code) from None
    archive.unlink()
    return dest


# -- the checkpoint ----------------------------------------------------------------------------------------------


def _locate(fetched: Path, *, hint: str, label: str) -> tuple[Path, int]:
    """The checkpoint folder among what was fetched (it, or the latest checkpoint-N folder below it), and its step."""
    if (fetched / STATE_FILE).is_file():
        found = fetched
    else:
        below = [state.parent for state in fetched.rglob(STATE_FILE)]
        if not below:
            raise resume_error(f"{label} is not a SimpleTuner checkpoint: no {STATE_FILE} in it")
        found = max(below, key=lambda folder: (state_step(folder) or -1, folder.name))
    step = state_step(found)
    if step is None:
        raise resume_error(f"{label}: {STATE_FILE} has no global_step")
    if not any((found / name).is_file() for name in WEIGHT_FILES):
        raise resume_error(f"{label} is not a SimpleTuner checkpoint: none of {', '.join(WEIGHT_FILES[:2])} in it")
    named = checkpoint_step(found)
    named = checkpoint_step(PurePosixPath(hint.rstrip("/")).name.split(".")[0]) if named is None else named
    if named is not None and named != step:
        raise resume_error(f"{label}: the folder says step {named} but {STATE_FILE} says {step}")
    return found, step


def _place(found: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(found), str(target))
    for sampler_state in target.glob(SAMPLER_STATES):
        sampler_state.unlink()
    (target / FETCHED_MARKER).write_text("fetched to resume from; stored where it came from\n")
    return target


# -- resume_from: "auto" ------------------------------------------------------------------------------------------

AUTO = "auto"
NOTHING_THERE = frozenset({ErrorCode.RESUME_NOT_FOUND, ErrorCode.HUB_NOT_FOUND, ErrorCode.S3_NOT_FOUND})


def auto_sources(*, hub_repo: str | None, bucket: str | None, prefix: str = "", folder: str = "") -> list[str]:
    """Where `resume_from: "auto"` looks, in order: the job's Hub repo (its latest checkpoint-N folder, under
    checkpoints/ as core/publishing/checkpoints.py leaves them, or at the root as hub.include_checkpoints publishes
    them), then its bucket's `<prefix>/checkpoints/`. `folder`: an expert's own checkpoint folder
    (`checkpoints/high_noise`), in both places."""
    places = [f"hf://{hub_repo}" + (f"/{folder}" if folder else "")] if hub_repo else []
    if bucket:
        places.append(f"s3://{bucket}/" + "/".join(p for p in (prefix.strip("/"), folder or "checkpoints") if p))
    return places


def fetch_latest_checkpoint(sources: list[str], output_dir: Path, *, settings: Settings,
                            on_event: EventSink = ignore_event, token: str | None = None,
                            cancel: CancelFlag | None = None) -> Path | None:
    """`resume_from: "auto"`: the latest checkpoint at the first of `sources` that has one, fetched as
    fetch_checkpoint does; None (a fresh start, said in a log line) when none has one. A source that cannot be read
    (a refused token, a missing bucket) is an error, not a fresh start."""
    if not sources:
        raise resume_error('"auto" resumes from the job\'s own destination: set hub.repo_id or storage')
    for source in sources:
        try:
            return fetch_checkpoint(source, output_dir, settings=settings, on_event=on_event, token=token,
                                    cancel=cancel)
        except ResumeError as error:
            if error.code not in NOTHING_THERE:
                raise
            on_event(LogLine(f"resume_from auto: no checkpoint at {parse_source(source).public}"))
    on_event(LogLine("resume_from auto: no checkpoint yet, starting fresh"))
    return None


def fetch_finished_lora(sources: list[str], output_dir: Path, *, settings: Settings,
                        on_event: EventSink = ignore_event, token: str | None = None,
                        cancel: CancelFlag | None = None) -> int | None:
    """A finished expert of a job training both (core/publishing/checkpoints.py FINISHED, below each of `sources`):
    its LoRA into `output_dir`, and the step it ended at; None when no source has one (the expert trains)."""
    quiet = _only_progress(on_event)
    for source in sources:
        try:
            found = fetch_checkpoint(source.rstrip("/") + "/final", output_dir, settings=settings, on_event=quiet,
                                     token=token, cancel=cancel)
        except ResumeError as error:
            if error.code not in NOTHING_THERE:
                raise
            continue
        step = state_step(found) or 0
        shutil.move(str(found / LORA_FILE), str(Path(output_dir) / LORA_FILE))
        shutil.rmtree(found)
        on_event(LogLine(f"finished at step {step} in an earlier run: its LoRA is taken from {source}/final"))
        return step
    return None


def _only_progress(on_event: EventSink) -> EventSink:
    """Download progress only: fetch_checkpoint's words about resuming do not fit a finished expert."""
    return lambda event: on_event(event) if isinstance(event, DownloadProgress) else None
