"""Configuration is validated at start; a bad value stops the process with a message naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from workers_testlib import REPO, base_env

from workers.core.env import ConfigError, Settings, load_settings
from workers.gateway.config import GatewayConfig
from workers.queue_exporter.config import ExporterConfig
from workers.worker.config import WorkerConfig


def run_module(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], env=base_env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("module", "args", "env", "expected"),
    [
        ("workers.worker", ["--service", "stt"], {"METRICS_PORT": "70000"},
         "METRICS_PORT='70000'; allowed: an integer from 0 to 65535"),
        ("workers.worker", ["--service", "tts"], {"TTS_BACKEND": "festival"},
         "TTS_BACKEND='festival'; allowed: one of piper, coqui"),
        ("workers.worker", ["--service", "stt"], {"STT_MODEL": "/nonexistent/whisper"},
         "STT_MODEL='/nonexistent/whisper'; allowed: an existing CTranslate2 Whisper model directory"),
        ("workers.worker", ["--service", "ocr"], {}, "--service='ocr'; allowed: one of stt, tts"),
        ("workers.gateway", [], {"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http'; allowed: an integer"),
        ("workers.queue_exporter", [], {"QUEUES": "stt,ocr"}, "QUEUES='stt,ocr'"),
    ],
    ids=["bad-port", "unknown-backend", "missing-model-path", "unknown-service", "gateway-port", "queues"],
)
def test_process_refuses_to_start_with_a_bad_setting(module, args, env, expected) -> None:
    result = run_module(module, *args, **env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def worker(env: dict[str, str], service: str = "tts") -> WorkerConfig:
    return WorkerConfig.from_settings(Settings(env), service)


@pytest.mark.parametrize(
    ("env", "name", "allowed"),
    [
        ({"TTS_BACKEND": "coqui"}, "TTS_MODEL_DIR", "required when TTS_BACKEND=coqui"),
        ({"TTS_BACKEND": "coqui", "TTS_MODEL_DIR": "/nope"}, "TTS_MODEL_DIR", "containing config.json"),
        ({"TTS_MODEL_DIR": "/nope/voice.onnx"}, "TTS_MODEL_DIR", "an existing Piper voice"),
        ({"TTS_DEVICE": "tpu"}, "TTS_DEVICE", "one of cpu, cuda"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL", "redis://"),
        ({"QUEUE_NAME": "a:b"}, "QUEUE_NAME", "letters, digits"),
        ({"QUEUE_ATTEMPTS": "0"}, "QUEUE_ATTEMPTS", "from 1 to 100"),
        ({"QUEUE_LOCK_DURATION_MS": "fast"}, "QUEUE_LOCK_DURATION_MS", "an integer"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "one of DEBUG"),
    ],
)
def test_worker_config_errors_name_variable_value_and_allowed(env, name, allowed) -> None:
    with pytest.raises(ConfigError) as raised:
        worker(env)
    assert raised.value.name == name
    assert allowed in str(raised.value)
    assert repr(raised.value.value) in str(raised.value)


def test_stt_settings_and_defaults() -> None:
    config = worker({"STT_BATCH_SIZE": "8"}, "stt")
    assert config.stt is not None and config.stt.batch_size == 8
    assert config.stt.device == "cpu" and config.stt.compute_type == "int8"
    assert Path(config.stt.model, "model.bin").is_file()  # the bundled tiny.en model
    assert config.queue_name == "stt" and config.metrics.host == "127.0.0.1"
    assert worker({}, "stt").stt.batch_size == 1
    gpu = worker({"STT_DEVICE": "cuda"}, "stt")
    assert gpu.stt is not None and gpu.stt.compute_type == "float16" and gpu.stt.batch_size == 8
    with pytest.raises(ConfigError, match="STT_COMPUTE_TYPE='int3'"):
        worker({"STT_COMPUTE_TYPE": "int3"}, "stt")


def test_yaml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    config_file = tmp_path / "workers.yml"
    config_file.write_text("QUEUE_NAME: from-yaml\nMETRICS_PORT: 9999\nQUEUE_ATTEMPTS: 5\n")
    settings = Settings(load_settings({"WORKERS_CONFIG_FILE": str(config_file), "METRICS_PORT": "9100"}))
    config = WorkerConfig.from_settings(settings, "tts")
    assert (config.queue_name, config.metrics.port, config.policy.attempts) == ("from-yaml", 9100, 5)
    config_file.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="a YAML mapping"):
        load_settings({"WORKERS_CONFIG_FILE": str(config_file)})


def test_gateway_and_exporter_queue_lists() -> None:
    gateway = GatewayConfig.from_settings(Settings({"QUEUES": "stt-gpu:stt,tts"}))
    assert gateway.queues == {"stt": "stt-gpu", "tts": "tts"}
    with pytest.raises(ConfigError, match="at most one queue per service"):
        GatewayConfig.from_settings(Settings({"QUEUES": "a:stt,b:stt"}))
    exporter = ExporterConfig.from_settings(Settings({"QUEUES": "a:stt,b:stt,tts"}))
    assert [(q.name, q.service) for q in exporter.queues] == [("a", "stt"), ("b", "stt"), ("tts", "tts")]
    with pytest.raises(ConfigError, match="'a' is listed twice"):
        ExporterConfig.from_settings(Settings({"QUEUES": "a:stt,a:tts"}))
