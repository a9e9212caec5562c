"""HF dataset repos as a source, against the local Hub API (tests/support/hub_server.py).

huggingface_hub reads HF_HUB_OFFLINE once, at import, and this test process runs offline (conftest.py), so each
staging runs in a child process with the Hub client online and HF_ENDPOINT on the local server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.dataset.stage import stage_dataset
from core.errors import DatasetError
from core.settings import Settings
from core.spec.job import parse_job
from tests.support.clips import write_clip
from tests.support.hub_server import client_env, running_hub_server

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model"}
DRIVER = """
import json, sys
from pathlib import Path
from core.dataset.stage import caption_options, stage_dataset
from core.errors import JobError
from core.pipeline import hub_token
from core.settings import Settings
from core.spec.job import parse_job
from core.dataset import StagingLimits
from core.spec import ClipLimits
results = []
for job, dest, clip_bytes in json.loads(sys.argv[1]):
    events = []
    limits = StagingLimits(clips=ClipLimits(max_bytes=clip_bytes)) if clip_bytes else StagingLimits()
    try:
        spec, settings = parse_job(job), Settings.from_env()
        manifest = stage_dataset(spec.dataset, Path(dest), captions=caption_options(spec), settings=settings,
                                 token=hub_token(spec, settings), on_event=events.append, limits=limits)
    except JobError as error:
        results.append({"error": error.to_payload()})
        continue
    results.append({
        "images": {e.path.name: [e.caption, e.caption_source, e.width, e.height] for e in manifest.images},
        "clips": {e.path.name: [e.caption, e.caption_source, e.frames] for e in manifest.clips},
        "skipped": [[s.name, s.reason] for s in manifest.skipped],
        "source": manifest.source,
        "events": [e.to_dict() for e in events],
    })
print(json.dumps(results))
"""

def png(color=(200, 30, 30), size=(40, 30), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=kind)
    return buffer.getvalue()


def parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def stage_in_child(hub, runs: list[tuple[dict, Path]], *, token: str | None = None,
                   clip_bytes: int | None = None) -> list[dict]:
    """Stage each (dataset, dest) in one child process (one import of the Hub client for all of them); `clip_bytes`:
    one clip's bound (ClipLimits.max_bytes) when not the default."""
    env = client_env(hub, base={k: v for k, v in os.environ.items() if k != "HF_TOKEN"})
    env.update(HF_HOME=str(runs[0][1].parent / "hf-home"), PYTHONPATH=str(ROOT))
    if token:
        env["HF_TOKEN"] = token
    jobs = [[{"config": CONFIG, **job}, str(dest), clip_bytes] for job, dest in runs]
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_image_files_with_captions_pinned_to_one_commit(tmp_path: Path):
    with running_hub_server(connect=False) as hub:
        sha = hub.add_repo("user/pets", repo_type="dataset", private=False, files={
            ".gitattributes": b"*.png filter=lfs", "README.md": b"# pets", "train/cat.png": png(),
            "train/cat.txt": b"a cat", "train/dog.jpg": png(kind="JPEG"), "meta.csv": b"a,b",
        }).head.oid
        v1 = hub.add_commit("user/pets", {"old.png": png()}, revision="v1").oid
        out, old = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "user/pets"}, "trigger_word": "sks"}, tmp_path / "job"),
            ({"dataset": {"hf_repo": "user/pets", "revision": "v1"}}, tmp_path / "job-v1"),
        ])
        assert out["images"] == {"cat.png": ["sks, a cat", "file", 40, 30], "dog.jpg": ["sks", "trigger_word", 40, 30]}
        assert sorted(out["skipped"]) == [["README.md", "not an image"], ["meta.csv", "not an image"]]
        assert out["source"] == "hf dataset user/pets@main"
        downloads = [request.path for request in hub.requests_to("/resolve/")]
        assert downloads and all(f"/resolve/{v1 if path.endswith('old.png') else sha}/" in path for path in downloads)
        assert not any(p.endswith(("README.md", "meta.csv", ".gitattributes")) for p in downloads)
        progress = [e for e in out["events"] if e["type"] == "download"]
        assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
        assert list(old["images"]) == ["old.png"]


def test_parquet_with_image_and_caption_columns(tmp_path: Path):
    schema = pa.schema([("image", IMAGE_STRUCT), ("text", pa.string()), ("score", pa.float32())])
    rows = [
        {"image": {"bytes": png((i * 40, 0, 0)), "path": f"pic{i}.png"}, "text": f"caption {i}", "score": 1.0}
        for i in range(3)
    ]
    rows.append({"image": {"bytes": None, "path": "only-a-path.png"}, "text": "no bytes", "score": 0.0})
    rows.append({"image": {"bytes": b"not an image", "path": "bad.png"}, "text": None, "score": 0.0})
    custom = pa.schema([("jpg", pa.binary()), ("prompt", pa.string())])
    with running_hub_server(connect=False) as hub:
        hub.add_repo("org/rows", repo_type="dataset", private=False,
                     files={"data/train-00000.parquet": parquet(rows, schema), "README.md": b"x"})
        hub.add_repo("org/custom", repo_type="dataset", private=False,
                     files={"d.parquet": parquet([{"jpg": png(kind="JPEG"), "prompt": "custom"}], custom)})
        out, explicit, wrong = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "org/rows"}}, tmp_path / "a"),
            ({"dataset": {"hf_repo": "org/custom", "image_column": "jpg", "caption_column": "prompt"}}, tmp_path / "b"),
            ({"dataset": {"hf_repo": "org/custom", "caption_column": "caption"}}, tmp_path / "c"),
        ])
        assert out["images"] == {
            f"00000{i + 1}_pic{i}.png": [f"caption {i}", "column", 40, 30] for i in range(3)
        }
        assert sorted(reason for _, reason in out["skipped"]) == [
            "no image bytes", "not a decodable image", "not an image",
        ]
        assert list(explicit["images"].values()) == [["custom", "column", 40, 30]]
        assert wrong["error"]["field"] == "dataset.caption_column"
        assert "no column 'caption' (columns: jpg, prompt)" in wrong["error"]["message"]


def clips_of(tmp_path: Path) -> dict[str, bytes]:
    """Real tiny clips (PyAV) and the hostile files a video column might hold instead."""
    folder = tmp_path / "clips"
    walk = write_clip(folder / "walk.mp4", frames=9).read_bytes()
    run = write_clip(folder / "run.webm", frames=17, codec="libvpx-vp9").read_bytes()
    long = write_clip(folder / "long.mp4", frames=120, faststart=True).read_bytes()
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("a.png", b"not really")
    return {"walk": walk, "run": run, "cut": long[: len(long) // 2], "zip": bundle.getvalue()}


def test_a_repo_of_clip_files_stages_its_clips_and_skips_the_hostile_ones(tmp_path: Path):
    clips = clips_of(tmp_path)
    with running_hub_server(connect=False) as hub:
        hub.add_repo("user/walks", repo_type="dataset", private=False, files={
            "walk.mp4": clips["walk"], "walk.txt": b"a bar walking", "train/run.webm": clips["run"],
            "train/run.txt": b"a bar running", "cut.mp4": clips["cut"], "trap.mp4": clips["zip"],
        })
        out, bounded = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "user/walks"}, "trigger_word": "sks"}, tmp_path / "job"),
        ]) + stage_in_child(hub, [({"dataset": {"hf_repo": "user/walks"}}, tmp_path / "bounded")],
                            clip_bytes=max(len(clips["walk"]), len(clips["run"]), len(clips["zip"])))
        downloads = [request.path for request in hub.requests_to("/resolve/", method="GET")]
    assert out["clips"] == {"walk.mp4": ["sks, a bar walking", "file", 9],
                            "train__run.webm": ["sks, a bar running", "file", 17]}
    assert sorted(out["skipped"]) == [["cut.mp4", "truncated video"], ["trap.mp4", "not a video"]]
    # over one clip's bound in the repo's listing: skipped without a download
    assert len(clips["cut"]) > len(clips["walk"])
    assert ["cut.mp4", "video bomb"] in bounded["skipped"] and set(bounded["clips"]) == {"walk.mp4", "train__run.webm"}
    assert sum(path.endswith("/walk.mp4") for path in downloads) == 2
    assert sum(path.endswith("/cut.mp4") for path in downloads) == 1  # by the first job only


def video_parquet_with_datasets(tmp_path: Path, rows: list[dict]) -> bytes:
    """A parquet file written by the `datasets` library itself (the trainer env has it; the app env does not), its
    `video` column a `Video()` feature: what `push_to_hub` uploads for a video dataset."""
    trainer = Settings.from_env().trainer_python
    if not trainer.exists():
        pytest.skip("needs the trainer env's `datasets` library to write a Video-feature parquet")
    rows_file, out = tmp_path / "rows.json", tmp_path / "video.parquet"
    rows_file.write_text(json.dumps([{**row, "video": {"path": row["video"]["path"],
                                                      "bytes": row["video"]["bytes"].hex()
                                                      if row["video"]["bytes"] is not None else None}}
                                     for row in rows]))
    script = (
        "import json, sys\n"
        "from datasets import Dataset, Features, Value, Video\n"
        "rows = json.load(open(sys.argv[1]))\n"
        "for row in rows:\n"
        "    b = row['video']['bytes']\n"
        "    row['video']['bytes'] = bytes.fromhex(b) if b is not None else None\n"
        "features = Features({'video': Video(), 'text': Value('string')})\n"
        "Dataset.from_list(rows, features=features).to_parquet(sys.argv[2])\n"
    )
    done = subprocess.run([str(trainer), "-P", "-c", script, str(rows_file), str(out)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_bytes()


@pytest.mark.trainer_env
def test_a_parquet_dataset_with_a_video_column_stages_each_row_as_a_clip(tmp_path: Path):
    clips = clips_of(tmp_path)
    rows = [
        {"video": {"bytes": clips["walk"], "path": "walk.mp4"}, "text": "a bar walking"},
        {"video": {"bytes": clips["run"], "path": None}, "text": "a bar running"},  # no path: WebM from its bytes
        {"video": {"bytes": clips["cut"], "path": "cut.mp4"}, "text": "cut short"},
        {"video": {"bytes": clips["zip"], "path": "trap.mp4"}, "text": "a zip"},
        {"video": {"bytes": clips["zip"], "path": None}, "text": "a zip, no name"},
    ]
    data = video_parquet_with_datasets(tmp_path, rows)
    assert b'"_type": "Video"' in data or b'"_type":"Video"' in data
    with running_hub_server(connect=False) as hub:
        hub.add_repo("org/videos", repo_type="dataset", private=False,
                     files={"data/train-00000-of-00001.parquet": data, "README.md": b"x"})
        [out] = stage_in_child(hub, [({"dataset": {"hf_repo": "org/videos"}, "trigger_word": "sks"}, tmp_path / "a")])
    assert out["clips"] == {"000001_walk.mp4": ["sks, a bar walking", "column", 9],
                            "000002.webm": ["sks, a bar running", "column", 17]}
    assert out["images"] == {}
    assert sorted(out["skipped"]) == [  # a row that became a file is named by it, as an image row is
        ["000003_cut.mp4", "truncated video"], ["000004_trap.mp4", "not a video"], ["README.md", "not an image"],
        ["train-00000-of-00001.parquet#5", "not a video"],
    ]


def test_a_parquet_column_named_video_of_raw_bytes_is_read_as_clips(tmp_path: Path):
    """A parquet file written without the `datasets` metadata: the column's name says it holds video."""
    clips = clips_of(tmp_path)
    schema = pa.schema([("video", pa.binary()), ("caption", pa.string())])
    rows = [{"video": clips["walk"], "caption": "a bar walking"}, {"video": clips["run"], "caption": None},
            {"video": None, "caption": "an empty cell"}]
    with running_hub_server(connect=False) as hub:
        hub.add_repo("org/raw", repo_type="dataset", private=False, files={"d.parquet": parquet(rows, schema)})
        [out] = stage_in_child(hub, [({"dataset": {"hf_repo": "org/raw"}}, tmp_path / "a")])
    assert out["clips"] == {"000001.mp4": ["a bar walking", "column", 9], "000002.webm": ["000002", "file_name", 17]}
    assert out["skipped"] == [["d.parquet#3", "no video bytes"]]


def test_private_repos_missing_repos_and_revisions(tmp_path: Path):
    with running_hub_server(token="hf_secret_token_value", connect=False) as hub:
        hub.add_repo("me/private", repo_type="dataset", private=True, files={"a.png": png()})
        hub.add_repo("me/docs", repo_type="dataset", private=False, files={"README.md": b"x", "notes.txt": b"y"})
        denied, missing, nothing = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "me/private"}}, tmp_path / "a"),
            ({"dataset": {"hf_repo": "me/nothing"}}, tmp_path / "c"),
            ({"dataset": {"hf_repo": "me/docs"}}, tmp_path / "e"),
        ])
        allowed, revision = stage_in_child(hub, [
            ({"dataset": {"hf_repo": "me/private"}}, tmp_path / "b"),
            ({"dataset": {"hf_repo": "me/private", "revision": "v9"}}, tmp_path / "d"),
        ], token="hf_secret_token_value")
    assert denied["error"]["field"] == "dataset.hf_repo"
    assert "not found (or private: give a token with access)" in denied["error"]["message"]
    assert list(allowed["images"]) == ["a.png"]
    assert "hf_secret_token_value" not in json.dumps([denied, allowed, revision])
    assert missing["error"]["code"] == "hub_not_found" and "me/nothing" in missing["error"]["message"]
    assert revision["error"]["field"] == "dataset.revision"
    assert "has no image files and no parquet files" in nothing["error"]["message"]


def test_offline_mode_and_bad_repo_ids_are_clear_errors_in_process(tmp_path: Path):
    """This process imported huggingface_hub with HF_HUB_OFFLINE=1 (conftest.py)."""
    settings = Settings.from_env({})
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE is set") as caught:
        stage_dataset(parse_job({"dataset": {"hf_repo": "user/pets"}, "config": CONFIG}).dataset, tmp_path / "a",
                      settings=settings)
    assert caught.value.field == "dataset.hf_repo"
    with pytest.raises(DatasetError, match="is not a dataset repo id") as caught:
        stage_dataset(parse_job({"dataset": {"hf_repo": "../../etc"}, "config": CONFIG}).dataset, tmp_path / "b",
                      settings=settings)
    assert caught.value.field == "dataset.hf_repo"


CACHED_DRIVER = """
import json, sys
from pathlib import Path
from core.cache.datasets import stage_dataset_cached
from core.cache.store import Cache
from core.dataset.stage import caption_options
from core.errors import JobError
from core.pipeline import hub_token
from core.settings import Settings
from core.spec.job import parse_job
spec, settings = parse_job(json.loads(sys.argv[1])), Settings.from_env()
try:
    manifest, reuse = stage_dataset_cached(spec.dataset, Path(sys.argv[2]), settings=settings,
                                           cache=Cache.from_settings(settings), captions=caption_options(spec),
                                           token=hub_token(spec, settings))
    print(json.dumps({"images": sorted(e.path.name for e in manifest.images), "cache": reuse.status}))
except JobError as error:
    print(json.dumps({"error": error.to_payload()}))
"""


def test_a_private_dataset_in_the_cache_is_reused_only_by_a_job_whose_token_can_read_it(tmp_path: Path):
    """A job staged a private dataset at a pinned commit with a token that could read it; a later job at the same
    commit whose token cannot gets the Hub's refusal, never the cached copy."""
    def stage(token: str | None, dest: Path, sha: str, hub) -> dict:
        env = client_env(hub, base={k: v for k, v in os.environ.items() if k != "HF_TOKEN"})
        env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(ROOT), CACHE_DIR=str(tmp_path / "cache"))
        if token:
            env["HF_TOKEN"] = token
        job = {"config": CONFIG, "dataset": {"hf_repo": "me/private", "revision": sha}}
        done = subprocess.run([sys.executable, "-c", CACHED_DRIVER, json.dumps(job), str(dest)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    with running_hub_server(token="hf_secret_token_value", connect=False) as hub:
        sha = hub.add_repo("me/private", repo_type="dataset", private=True, files={"a.png": png()}).head.oid
        first = stage("hf_secret_token_value", tmp_path / "a", sha, hub)
        again = stage("hf_secret_token_value", tmp_path / "b", sha, hub)
        other = stage(None, tmp_path / "c", sha, hub)
    assert first == {"images": ["a.png"], "cache": "stored"}
    assert again == {"images": ["a.png"], "cache": "reused"}
    assert other["error"]["field"] == "dataset.hf_repo" and other["error"]["code"] == "hub_not_found"
    assert not (tmp_path / "c" / "images").exists() or not any((tmp_path / "c").rglob("a.png"))
