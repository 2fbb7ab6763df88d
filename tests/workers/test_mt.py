"""The mt worker on a Marian model built here with random weights (tests/workers/marian_model.py), converted by
CTranslate2's own converter: tokenization equals transformers' MarianTokenizer, greedy decoding equals
MarianMTModel.generate, batching does not change a job's output, and bad jobs and settings are named.
The translations themselves are meaningless (random weights)."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from bullmq import UnrecoverableError
from workers_testlib import start_worker

from workers.core.env import ConfigError, Settings
from workers.mt.config import MtConfig
from workers.mt.marian import MarianTranslator
from workers.mt.random_model import build_random_marian, convert
from workers.mt.service import MtEngine

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "please call me back",
         "the train leaves at seven o'clock, this is a test"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("marian")
    hf = build_random_marian(root / "hf")
    multi_hf = build_random_marian(root / "multi-hf", targets=("de", "fr"), seed=1)
    return SimpleNamespace(hf=hf, ct2=convert(hf, root / "ct2"), multi=convert(multi_hf, root / "multi"),
                           multi_hf=multi_hf)


def config(model: Path, **env: str) -> MtConfig:
    return MtConfig.from_settings(Settings({"MT_MODEL": str(model), "MT_COMPUTE_TYPE": "float32", **env}))


def loaded(model: Path, **env: str) -> MarianTranslator:
    t = MarianTranslator(config(model, **env))
    t.load()
    return t


def test_tokens_are_marian_tokenizers(models) -> None:
    from transformers import MarianTokenizer

    tok = MarianTokenizer.from_pretrained(models.hf)
    ours = loaded(models.ct2).tokenize(TEXTS, "de")
    assert ours == [tok.convert_ids_to_tokens(tok.encode(t)) for t in TEXTS]
    assert all(seg[-1] == "</s>" for seg in ours)


def test_greedy_translation_equals_transformers_generate(models) -> None:
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    tok = MarianTokenizer.from_pretrained(models.hf)
    model = MarianMTModel.from_pretrained(models.hf).eval()
    t = loaded(models.ct2, MT_MAX_DECODING_LENGTH="24")
    with torch.no_grad():
        # generate's max_new_tokens counts the </s> it forces at the limit; CTranslate2's length does not.
        ids = model.generate(**tok(TEXTS, return_tensors="pt", padding=True), num_beams=1, do_sample=False,
                             max_new_tokens=25)
    expected = tok.batch_decode(ids, skip_special_tokens=True)
    got = t.translate([t.tokenize(TEXTS, "de")])[0].segments
    assert got == expected
    assert len(set(got)) > 1, "the random model gives one output for every input: the check would be weak"


def test_a_batch_of_jobs_gives_each_job_what_it_gets_alone(models) -> None:
    t = loaded(models.ct2)
    jobs = [t.tokenize(TEXTS[:2], "de"), t.tokenize(TEXTS[2:3], "de"), t.tokenize(TEXTS[1:], "de")]
    together = t.translate(jobs)
    alone = [t.translate([j])[0] for j in jobs]
    assert together == alone
    assert [len(x.segments) for x in together] == [2, 1, 3]
    assert together[0].tokens_in == sum(len(s) for s in jobs[0])
    assert t.translate(jobs) == together  # deterministic
    assert all(0 < x.tokens_out <= 256 * len(x.segments) for x in together)


def test_a_multi_target_model_is_told_the_target(models) -> None:
    from transformers import MarianTokenizer

    with pytest.raises(ConfigError, match="MT_TARGET_LANGUAGES"):  # its tokenizer_config.json names none
        config(models.multi)
    t = loaded(models.multi, MT_TARGET_LANGUAGES="de,fr")
    de, fr = t.tokenize(["hello world"], "de")[0], t.tokenize(["hello world"], "fr")[0]
    assert de[0] == ">>de<<" and fr[0] == ">>fr<<" and de[1:] == fr[1:]
    tok = MarianTokenizer.from_pretrained(models.multi_hf)
    assert de == tok.convert_ids_to_tokens(tok.encode(">>de<< hello world"))
    # The token reaches the model: each target's output is transformers' generate on ">>xx<< text".
    import torch
    from transformers import MarianMTModel

    model = MarianMTModel.from_pretrained(models.multi_hf).eval()
    short = loaded(models.multi, MT_TARGET_LANGUAGES="de,fr", MT_MAX_DECODING_LENGTH="16")
    with torch.no_grad():
        ids = model.generate(**tok([">>de<< hello world", ">>fr<< hello world"], return_tensors="pt"),
                             num_beams=1, do_sample=False, max_new_tokens=17)
    expected = [re.sub(r">>\w+<<", "", x) for x in tok.batch_decode(ids, skip_special_tokens=True)]
    got = [x.segments[0] for x in short.translate([[de], [fr]])]
    assert got == expected and ">>" not in "".join(got)


def test_a_target_the_model_has_no_token_for_is_refused_at_load(models) -> None:
    t = MarianTranslator(config(models.multi, MT_TARGET_LANGUAGES="de,es"))
    with pytest.raises(ValueError, match=r"\['es'\].*>>es<<"):
        t.load()


@pytest.mark.parametrize("env, name, allowed", [
    ({"MT_MODEL": "/nonexistent"}, "MT_MODEL", "no such directory"),
    ({"MT_TARGET_LANGUAGES": "de;fr"}, "MT_TARGET_LANGUAGES", "comma-separated list"),
    ({"MT_SOURCE_LANGUAGE": "English"}, "MT_SOURCE_LANGUAGE", "language code"),
    ({"MT_BATCH_SIZE": "0"}, "MT_BATCH_SIZE", "from 1 to 256"),
    ({"MT_DEVICE": "tpu"}, "MT_DEVICE", "cpu"),
])
def test_bad_settings_name_the_setting_and_what_is_allowed(models, env, name, allowed) -> None:
    with pytest.raises(ConfigError) as err:
        MtConfig.from_settings(Settings({"MT_MODEL": str(models.ct2), **env}))
    assert name in str(err.value) and allowed in str(err.value)


def test_a_model_directory_without_its_tokenizer_is_named(models, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes((models.ct2 / "model.bin").read_bytes())
    with pytest.raises(ConfigError, match=r"missing source\.spm, target\.spm"):
        MtConfig.from_settings(Settings({"MT_MODEL": str(tmp_path)}))


def test_languages_default_to_the_models_tokenizer_config(models) -> None:
    c = MtConfig.from_settings(Settings({"MT_MODEL": str(models.ct2)}))
    assert (c.source_language, c.target_languages, c.compute_type) == ("en", ("de",), "int8")


def job(data: object) -> SimpleNamespace:
    return SimpleNamespace(id=f"mt-{uuid.uuid4().hex}", data=data)


@pytest.mark.parametrize("data, message", [
    ({"segments": ["hi"], "target_language": "xx"}, "target_language 'xx' is not one this model translates to"),
    ({"segments": ["hi"]}, "target_language None"),
    ({"segments": "hi", "target_language": "de"}, "'segments' must be a non-empty list of strings"),
    ({"segments": [], "target_language": "de"}, "'segments' must be a non-empty list"),
    ({"segments": ["ok", "  "], "target_language": "de"}, r"segment\(s\) \[1\] are empty"),
    ({"target_language": "de"}, "needs 'segments'"),
    ({"text": "hi", "target_language": "de", "source_language": "fr"}, "translates from 'en'"),
    ({"text": "hi", "target_language": "de", "media_seconds": "5"}, "media_seconds must be a number"),
    ({"segments": ["a"] * 3, "target_language": "de"}, "3 segments; the limit is 2"),
    ({"text": "hello world " * 20, "target_language": "de"}, "segment 0 has .* tokens; the limit is 30"),
])
def test_bad_jobs_fail_without_retry_naming_the_field(models, data, message) -> None:
    engine = MtEngine(config(models.ct2, MT_MAX_SEGMENTS="2", MT_MAX_INPUT_TOKENS="30"))
    engine.load()
    with pytest.raises(UnrecoverableError, match=message):
        asyncio.run(engine.prepare(job(data)))


def test_the_engine_round_trip_and_its_record(models) -> None:
    engine = MtEngine(config(models.ct2, MT_BATCH_SIZE="4"))
    engine.load()
    jobs = [job({"segments": TEXTS[:2], "target_language": "de", "media_seconds": 12.5}),
            job({"text": TEXTS[3], "target_language": "de"})]
    items = [asyncio.run(engine.prepare(j)) for j in jobs]
    outputs = engine.run_batch(items)
    records = [asyncio.run(engine.finish(j, o)) for j, o in zip(jobs, outputs, strict=True)]
    assert [len(r["segments"]) for r in records] == [2, 1]
    assert records[0]["target_language"] == "de" and records[0]["source_language"] == "en"
    assert records[0]["model"] == "ct2" and records[0]["tokens_in"] > 0
    assert [engine.audio_seconds(i, o) for i, o in zip(items, outputs, strict=True)] == [12.5, 0.0]
    assert engine.max_batch == 4 and engine.batch_wait_s == pytest.approx(0.01)


@pytest.mark.slow
def test_jobs_through_the_gateway_and_a_worker_process(models, redis_url: str, tmp_path: Path) -> None:
    """The real path: the gateway queues mt jobs in BullMQ on a real Redis, a worker process (python -m
    workers.worker --service mt) batches and translates them, the gateway serves the results."""
    import time

    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry
    from test_roundtrip import metric, wait_done

    from workers.gateway.app import create_app
    from workers.gateway.config import GatewayConfig

    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "mt" + uuid.uuid4().hex[:8], "QUEUES": "mt"}
    worker, port = start_worker(tmp_path, "mt", "mt", {**env, "MT_MODEL": str(models.ct2), "MT_BATCH_SIZE": "8",
                                                       "MT_BATCH_WAIT_MS": "200", "MT_COMPUTE_TYPE": "float32"})
    try:
        config = GatewayConfig.from_settings(Settings({**env, "GATEWAY_STATE_DIR": str(tmp_path / "gw"),
                                                       "MT_TARGET_LANGUAGES": "de"}))
        with TestClient(create_app(config, CollectorRegistry())) as client:
            headers = {"X-API-Key": config.api_key_file.read_text().strip()}
            t0 = time.monotonic()
            ids = [client.post("/v1/jobs/mt", json={"segments": TEXTS[i:i + 2], "target_language": "de"},
                               headers=headers).json()["id"] for i in range(3)]
            done = wait_done(client, ids, headers, 60)
        assert [d["status"] for d in done] == ["completed"] * 3, done
        alone = loaded(models.ct2)
        for i, d in enumerate(done):
            assert d["result"]["segments"] == alone.translate([alone.tokenize(TEXTS[i:i + 2], "de")])[0].segments
            assert d["timings"]["processing_s"] > 0
        assert time.monotonic() - t0 < 60
        assert metric(port, "model_worker_jobs_total", service="mt", status="completed") == 3
        assert metric(port, "model_worker_batch_size_count", service="mt") < 3  # batched across jobs
    finally:
        worker.stop()


def test_a_random_weight_model_is_labelled_in_every_result(tmp_path: Path) -> None:
    from workers.mt.random_model import main as build

    assert build([str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "RANDOM_WEIGHTS.txt").is_file()
    engine = MtEngine(config(tmp_path / "demo"))
    assert engine.describe()["model"] == "demo (random weights)"
