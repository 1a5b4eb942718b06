"""Issue 21, row by row: what a stranger with a script sends the launched app, and the one sentence each gets.

Through real HTTP to a launched app (gradio_client, or raw calls the page would never make). Nothing here asserts a
time: the timing oracle is closed by construction (an upload is unpacked into its visitor's own folder) and that is
what is checked. Memory rows compare this process's memory growth (the app runs in it) with a bound.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import re
import uuid
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from cnncompare.server import boundary, ledger, visitors  # noqa: E402
from tests.support import TINY_FORM, cifar_archive, many_tensors, raw_call, shapes_zip, weights_file  # noqa: E402

KEY_A = "A" * 12 + "-hostile-" + uuid.uuid4().hex[:12]  # fresh each session: nothing left from an earlier run
KEY_B = "B" * 12 + "-hostile-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _client(app) -> Client:
    return Client(app.url, analytics_enabled=False, verbose=False)


def _finetune(client: Client, key: str, **changes):
    return client.predict(**{**TINY_FORM, **changes}, visitor=key, api_name="/finetune")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- 1. a server file as weights


def test_row1_a_server_path_as_weights_is_refused_with_one_sentence_whatever_it_names(app, tmp_path):
    """A valid weights file placed on the server, /etc/passwd and a path that does not exist: the same answer."""
    real = weights_file(tmp_path / "resnet18.safetensors", 0)
    client = _client(app)
    answers = []
    for path in (real, "/etc/passwd", "/etc/no-such-file"):
        status = _finetune(client, KEY_A, models=f"resnet18@head weights_file={path}", pretrained=True)[0]
        answers.append(status)
    assert boundary.NO_PATHS in answers[0]
    assert len(set(answers)) == 1  # nothing tells whether the file exists or what it is
    assert not (app.runs / "visitors" / visitors.folder_id(KEY_A)).exists() or not any(
        (app.runs / "visitors" / visitors.folder_id(KEY_A)).glob("*/weights.safetensors")
    )


def test_row1_the_cli_still_takes_a_path_from_its_own_user(tmp_path, monkeypatch, capsys):
    from cnncompare.cli import main

    weights = weights_file(tmp_path / "resnet18.safetensors", 0)
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    args = ["finetune", "--models", f"resnet18@head weights_file={weights}", "--pretrained", "--size", "32"]
    code = main([*args, "--epochs", "1", "--max-per-class", "8", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err


# --------------------------------------------------------------------------- 2. private weights through sharing


def test_row2_two_visitors_with_their_own_weights_never_share_a_run(app, tmp_path):
    client = _client(app)
    for key, seed in ((KEY_A, 1), (KEY_B, 2)):
        weights = weights_file(tmp_path / f"w{seed}.safetensors", seed)
        status, _ = client.predict("resnet18", handle_file(str(weights)), key, api_name="/upload_weights")
        assert "resnet18" in status and "⚠" not in status, status
    form = dict(models="resnet18@head", pretrained=True)
    first = _finetune(client, KEY_A, **form)[0]
    second = _finetune(client, KEY_B, **form)[0]
    assert "Done" in first and "Done" in second, (first, second)
    assert "computed once" not in second and "another visitor" not in second  # B trained on B's own weights
    again = _finetune(client, KEY_A, **form)[0]  # inside A's own folder an identical run is still shared
    assert "computed once" in again


# --------------------------------------------------------------------------- 3. no timing oracle on uploads


def test_row3_an_upload_is_unpacked_for_its_visitor_alone(app, tmp_path):
    """Whether someone else uploaded the same zip cannot be timed: B's report unpacks B's own copy."""
    upload = shapes_zip(tmp_path / "mine.zip")
    client = _client(app)
    reports = []
    for key in (KEY_A, KEY_B):
        reports.append(
            client.predict(
                **{**TINY_FORM, "dataset": "zip", "zip_file": handle_file(str(upload))},
                visitor=key,
                api_name="/estimate",
            )
        )
    ctx = app.demo.cnncompare_context
    for key in (KEY_A, KEY_B):
        who = visitors.Visitor(visitors.folder_id(key), visitors.folder_id(key))
        assert list((ledger.unpack_dir(ctx, who) / "uploads").iterdir()), f"no copy of its own for {key}"
    assert not (ctx.data_dir / "uploads").is_dir() or not list((ctx.data_dir / "uploads").iterdir())


def test_row3_a_prediction_of_an_upload_is_kept_for_its_visitor_alone(app, tmp_path):
    """The app's own examples are shared (a class computes one once); someone's own picture is not."""
    from PIL import Image

    from cnncompare.ui import predict

    picture = tmp_path / "mine.png"
    Image.new("RGB", (40, 30), (12, 200, 90)).save(picture)
    client = _client(app)
    for key in (KEY_A, KEY_B):
        client.predict(handle_file(str(picture)), ["resnet18"], [], False, key, api_name="/predict")
    kept = [k for k in list(predict.PREDICTIONS._items) if isinstance(k[0], str) and ":" in k[0]]
    owners = {k[0].split(":")[0] for k in kept}
    assert {visitors.folder_id(KEY_A), visitors.folder_id(KEY_B)} <= owners


# --------------------------------------------------------------------------- 4. every byte counted


def _trained_run(client: Client, key: str) -> str:
    table = _finetune(client, key, models="resnet18@head", lr=0.0011)[3]
    return table["data"][0][table["headers"].index("folder")]


def test_row4_an_export_is_made_once_and_counted_against_the_quota(app):
    client = _client(app)
    run = _trained_run(client, KEY_A)
    first, text = client.predict(run, ["safetensors"], KEY_A, api_name="/export_run")
    second, _ = client.predict(run, ["safetensors"], KEY_A, api_name="/export_run")
    ctx = app.demo.cnncompare_context
    who = visitors.Visitor(visitors.folder_id(KEY_A), visitors.folder_id(KEY_A))
    exports = list(ledger.visitor_downloads(who).glob("export-*/*.zip"))
    assert len(exports) == 1 and "exported" in text  # the same export twice: one file on disk
    assert Path(first).name == Path(second).name
    saved = ctx.env
    downloads = ledger._files_bytes([ledger.visitor_downloads(who)])  # a new download may replace these
    try:  # a quota already used up: the next export is refused before anything is written
        ctx.env = dataclasses.replace(saved, visitor_quota_mb=(ledger.usage(ctx, who) - downloads) / 2**20 + 0.5)
        path, text = client.predict(run, ["safetensors", "onnx"], KEY_A, api_name="/export_run")
    finally:
        ctx.env = saved
    assert path is None and "your files already use" in text, text
    assert len(list(ledger.visitor_downloads(who).glob("export-*"))) <= 1  # nothing of the refused one


def test_row4_the_shared_store_is_counted_and_pruned(app):
    ctx = app.demo.cnncompare_context
    client = _client(app)
    _finetune(client, KEY_B, models="resnet18@head", lr=0.0012)  # a shared run: kept in <runs>/_shared
    shared = ctx.runs_root / ledger.SHARED_DIR
    assert any(shared.iterdir())
    assert ledger.server_bytes(ctx, "runs") >= ledger._files_bytes([shared])
    saved = ctx.env
    try:  # a cap of zero bytes: the store goes first
        ctx.env = dataclasses.replace(saved, runs_cap_mb=1e-6)
        ledger.prune_all(ctx)
    finally:
        ctx.env = saved
    assert not [d for d in shared.iterdir() if (d / "config.json").is_file()]


def _report(client: Client, key: str, archive: Path, **changes) -> str:
    form = {**TINY_FORM, "dataset": "zip", "zip_file": handle_file(str(archive)), **changes}
    return client.predict(**form, visitor=key, api_name="/estimate")


def test_row4_a_cifar_archive_bomb_is_refused_before_it_is_unpacked(app, tmp_path):
    archive = cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch_bytes=200 * 2**20)
    assert archive.stat().st_size < 2**20  # 200 MB of zeros in a file of a few hundred KB
    text = _report(_client(app), KEY_A, archive)
    assert "larger than CIFAR-10's own" in text, text
    ctx = app.demo.cnncompare_context
    who = visitors.Visitor(visitors.folder_id(KEY_A), visitors.folder_id(KEY_A))
    assert ledger._files_bytes([ledger.unpack_dir(ctx, who)]) < 50 * 2**20


def test_row4_a_huge_field_is_refused_before_it_reaches_the_log(app, caplog):
    """An 8 MB dropdown value: 413 at the door, never parsed, echoed or logged."""
    config = httpx.get(app.url + "config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "profile")
    body = {"data": [["x" * 8_000_000], "", False, None], "fn_index": fn_index, "session_hash": uuid.uuid4().hex}
    with caplog.at_level(logging.DEBUG):
        answer = httpx.post(app.url + "gradio_api/queue/join", json=body, timeout=60)
    assert answer.status_code == 413 and len(answer.text) < 1000
    assert "xxxxxxxxxx" * 20 not in caplog.text


# --------------------------------------------------------------------------- 5. memory admitted before work


def test_row5_an_archive_of_many_members_is_refused_after_a_few(app, tmp_path):
    archive = cifar_archive(tmp_path / "cifar-10-python.tar.gz", members=5000)
    text = _report(_client(app), KEY_A, archive)
    assert "holds more than 64 files" in text, text


def test_row5_a_cifar_archive_is_costed_before_it_queues(app, tmp_path):
    """The archive's size is known from its name (CIFAR-10's split): batch 1024 at 512 px is refused before any
    byte of it is read."""
    archive = cifar_archive(tmp_path / "cifar-10-python.tar.gz", members=1)
    form = {**TINY_FORM, "dataset": "zip", "zip_file": handle_file(str(archive))}
    form.update(models="resnet18@none", batch_size=1024, size=512, max_per_class=0)
    status = _client(app).predict(**form, visitor=KEY_A, api_name="/finetune")[0]
    assert "needs about" in status and "use a batch of at most" in status, status


def test_row5_a_weights_file_of_a_million_tiny_tensors_is_refused_from_its_header(app, tmp_path):
    path = many_tensors(tmp_path / "resnet50.safetensors", 200_000)
    before = _rss_mb()
    status, _ = _client(app).predict("resnet50", handle_file(str(path)), KEY_A, api_name="/upload_weights")
    assert "200,000 tensors" in status or "far more than any model's weights need" in status, status  # from its header
    assert _rss_mb() - before < 300


def test_row5_fresh_sessions_do_not_grow_the_server(app):
    """Each call with a new session id costs gradio a session's state (~0.4 MB here): it keeps the last
    CNNCOMPARE_MAX_SESSIONS. 1,000 fresh ids (ten times that) are enough to see the plateau in a test;
    benchmarks/load_class.py --scenario hostile sends 10,000."""
    config = httpx.get(app.url + "config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "runs")

    def join(_):
        body = {"data": [KEY_A], "fn_index": fn_index, "session_hash": uuid.uuid4().hex}
        return httpx.post(app.url + "gradio_api/queue/join", json=body, timeout=60).status_code

    join(0)
    before = _rss_mb()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(join, range(1_000)))
    assert codes.count(200) >= 900
    grown = _rss_mb() - before
    assert len(app.demo.state_holder.session_data) <= app.demo.cnncompare_context.env.max_sessions
    assert grown < 200, f"+{grown:.0f} MB for 1,000 fresh sessions"


# --------------------------------------------------------------------------- 6. workspaces for a school


def test_row6_one_student_mistyping_never_locks_out_the_class(app):
    ctx = app.demo.cnncompare_context
    code = ctx.workspaces.create()
    client = _client(app)
    try:
        for i in range(ctx.env.code_attempts + 3):  # one key, from the school's one address
            answer = client.predict({"key": KEY_A, "code": f"typo{i:012d}"}, api_name="/runs")
        assert "Too many wrong workspace codes" in answer["error"]
        other = client.predict({"key": KEY_B, "code": "typo999999999999"}, api_name="/runs")
        assert "not a workspace code" in other["error"]  # another student's own typo: not locked by the first
        for key in (KEY_A, KEY_B):  # and the right code works for everyone, even the one who mistyped
            assert "error" not in client.predict({"key": key, "code": code}, api_name="/runs")
    finally:
        ctx.workspaces._failures.clear()


def test_row6_x_forwarded_for_is_not_believed_from_anyone(app):
    """Each guess claims another address: the limit still counts the connection's own."""
    ctx = app.demo.cnncompare_context
    try:
        answers = []
        for i in range(ctx.env.code_attempts * 10 + 5):
            key = f"{i:06d}" + "k" * 20  # a fresh key each time: only the address can stop them
            ok, out = raw_call(
                app.url,
                "runs",
                [{"key": key, "code": f"xff{i:013d}"}],
                session_hash=uuid.uuid4().hex,
                headers={"X-Forwarded-For": f"203.0.113.{i % 250}"},
            )
            answers.append(str(out))
        assert "Too many wrong workspace codes" in answers[-1]
    finally:
        ctx.workspaces._failures.clear()


def test_row6_creating_workspaces_is_limited_and_waits_in_the_queue(app):
    """The page's Create button (a page-only event) through gradio's queue: a few per visitor, then a sentence."""
    ctx = app.demo.cnncompare_context
    config = httpx.get(app.url + "config", timeout=30).json()
    name = next(
        d["api_name"] for d in config["dependencies"] if str(d.get("api_name") or "").startswith("create_workspace")
    )
    try:
        texts = [str(raw_call(app.url, name, [{"key": KEY_A, "code": ""}])[1]) for _ in range(8)]
    finally:
        ctx.workspaces._creates.clear()
    assert "Created a workspace" in texts[0]
    assert "created several workspaces" in texts[-1]


# --------------------------------------------------------------------------- 7. many keys, one address


def test_row7_fresh_keys_from_one_address_hold_a_few_places_in_the_training_line(app):
    ctx = app.demo.cnncompare_context
    client = _client(app)
    jobs = [
        client.submit(
            **{**TINY_FORM, "lr": 0.002 + i * 1e-5, "epochs": 3}, visitor=f"{i:04d}" + "m" * 24, api_name="/finetune"
        )
        for i in range(8)
    ]
    try:
        firsts = []
        for job in jobs:
            for out in job:  # the first answer: refused, or waiting/training
                firsts.append(str(out[0]))
                break
        refused = [t for t in firsts if "limit per address" in t]
        assert len(refused) >= 8 - ctx.env.train_per_address, firsts
    finally:
        for job in jobs:
            job.cancel()
        client.predict(api_name="/stop")


# --------------------------------------------------------------------------- 8. bad input gets a sentence


BAD_VALUES = [
    ("lr", "nan"),
    ("lr", "inf"),
    ("epochs", "many"),
    ("optimizer", "x" * 5000),
    ("dataset", "x" * 5000),
    ("size", [3]),
    ("batch_size", {"a": 1}),
]


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_row8_every_bad_value_gets_one_sentence(app, field, value):
    status = _client(app).predict(**{**TINY_FORM, field: value}, visitor=KEY_A, api_name="/estimate")
    assert status.startswith("⚠️") and "unexpected" not in status and len(status) < 400, status


@pytest.mark.parametrize("ref", ["local-dir:/etc@head", "hf-hub:someone/model@head"])
def test_row1_an_export_reference_is_the_command_line_s_only(app, ref):
    """The CLI starts a run from an export folder or a Hub repository (`hubio`); from the web the same text is
    only an unknown model name: no folder of the server is read, nothing is downloaded."""
    status = _client(app).predict(**{**TINY_FORM, "models": ref}, visitor=KEY_A, api_name="/estimate")
    assert status.startswith("⚠️") and "Unknown model" in status, status


def test_row8_too_small_an_input_is_said_in_the_rules_words_not_torchs(app):
    """AlexNet at 48 px (what the BatchNorm lesson leaves in the form): the memory admission used to raise torch's
    'Calculated output size: (256x0x0)'."""
    status = _finetune(_client(app), KEY_A, models="alexnet@none", size=48)[0]
    assert "at least 63" in status and "unexpected" not in status and "RuntimeError" not in status, status


@pytest.mark.parametrize("fmts", [None, "x" * 5000, ["zzz"], 5])
def test_row8_export_formats_of_any_type_get_one_sentence(app, fmts):
    path, text = _client(app).predict("no-such-run", fmts, KEY_A, api_name="/export_run")
    assert path is None and "unexpected" not in text and len(text) < 400, text


def test_row8_cifar_pixels_that_are_not_bytes_are_refused(app, tmp_path):
    client = _client(app)
    for i, kind in enumerate((dict(dtype=object), dict(dtype=np.float32, nan=True))):
        folder = tmp_path / f"{i}"
        folder.mkdir()
        archive = cifar_archive(folder / "cifar-10-python.tar.gz", **kind)
        text = _report(client, KEY_B, archive)
        assert "not bytes (uint8)" in text and "unexpected" not in text, text


# Cheap arguments for every named endpoint (nothing here starts a long job); one is replaced at a time by a hostile
# value. A new endpoint must be listed here: the test fails on any it does not know.
CHEAP = {
    "/profile": [["resnet18"], "64", False, KEY_A],
    "/diagram": [["resnet18"], "64", "head", KEY_A],
    "/blocks": [["resnet18"], "64", "head", KEY_A],
    "/predict": [None, ["resnet18"], [], False, KEY_A],
    "/upload_weights": ["resnet18", None, KEY_A],
    "/remove_weights": ["resnet18", KEY_A],
    "/confusion_images": ["no-run", "a", "b", KEY_A],
    "/export_run": ["no-run", ["safetensors"], KEY_A],
    "/finetune": {**TINY_FORM, "models": "nosuchmodel@head", "visitor": KEY_A},
    "/estimate": {**TINY_FORM, "models": "nosuchmodel@head", "visitor": KEY_A},
    "/stop": [],
    "/runs": [KEY_A],
}
HOSTILE = [None, "x" * 300, 1e308, {"a": [1, {"b": None}]}, [["deep"]] * 70]


def test_row8_every_input_of_every_endpoint_answers_hostile_values_in_one_sentence(app):
    client = _client(app)
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(named) == set(CHEAP), "list the new endpoint's cheap arguments in CHEAP"
    for name, base in CHEAP.items():
        if isinstance(base, dict):  # by the endpoint's own parameter order
            base = [base[p["parameter_name"]] for p in named[name]["parameters"]]
        for i in range(len(base)):
            for value in HOSTILE:
                args = [*base[:i], value, *base[i + 1 :]]
                try:
                    out = client.predict(*args, api_name=name)
                except Exception as err:  # gradio refused it itself: one short sentence, no traceback
                    text = str(err)
                    assert len(text) < 600 and "Traceback" not in text, (name, i, text[:300])
                    continue
                text = json.dumps(out, default=str)
                assert "unexpected" not in text and "x" * 200 not in text, (name, i, repr(value)[:40], text[:300])


def test_the_readme_lists_the_app_s_endpoints_by_their_real_names(app):
    named = _client(app).view_api(return_format="dict", print_info=False)["named_endpoints"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paragraph = readme[readme.index("The app's functions are API endpoints") :].split("\n\n")[0]
    assert set(re.findall(r"`(/[a-z_0-9]+)`", paragraph)) == set(named)


# --------------------------------------------------------------------------- 9. what /config tells anyone


def test_row9_the_config_holds_no_visitor_key_and_no_server_path(app):
    config = httpx.get(app.url + "config", timeout=30).text
    assert str(app.runs) not in config
    assert KEY_A not in config and KEY_B not in config
    # gradio's deep links write a session's values to disk per session id: the app does not use them
    assert httpx.get(app.url + "gradio_api/deep_link?session_hash=x", timeout=30).status_code == 404


# --------------------------------------------------------------------------- the review's findings, as units


def test_refused_guesses_record_nothing_so_fresh_names_cannot_flush_the_limit(tmp_path):
    ws = visitors.Workspaces(tmp_path, attempts=2)
    for i in range(2):
        with pytest.raises(Exception, match="not a workspace code"):
            ws.check(f"wrong{i:011d}", "10.0.0.1", "k")
    for i in range(50):  # refused: the key's limit is reached; nothing new is written
        with pytest.raises(Exception, match="Too many"):
            ws.check(f"again{i:011d}", "10.0.0.1", "k")
    assert len(ws._failures) == 2  # "key:k" and "addr:10.0.0.1"


def test_a_corrupt_or_overlong_cifar_archive_gets_one_sentence(tmp_path):
    from cnncompare.data import DataError
    from cnncompare.data.cifar import CIFAR, unpack_archive

    broken = tmp_path / "cifar-10-python.tar.gz"
    good = cifar_archive(tmp_path / "ok.tar.gz", members=3)
    raw = bytearray(good.read_bytes())
    raw[20:60] = b"\xff" * 40  # the deflate stream damaged
    broken.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not a readable .tar.gz|unpacks to more"):
        unpack_archive(broken, CIFAR["cifar10"], tmp_path)


def test_a_legacy_pth_is_not_mistaken_for_a_safetensors_header(tmp_path):
    import torch

    from cnncompare.models.weights import tensor_count

    path = tmp_path / "old.pth"
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    assert tensor_count(path, 10) == 0  # unknown: the reader says what is wrong, not "a header of 4 TB"
    new = tmp_path / "new.pth"
    torch.save({f"w{i}": torch.zeros(1) for i in range(7)}, new)
    assert tensor_count(new, 100) >= 7
