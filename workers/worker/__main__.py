"""python -m workers.worker --service stt|tts|mt|lipsync|xtts: validate the configuration, then run the worker."""

from __future__ import annotations

import argparse
import asyncio
import sys

from prometheus_client import disable_created_metrics
from redis.asyncio import Redis

from workers.core.env import ConfigError, Settings, load_settings
from workers.core.jsonlog import setup_logging
from workers.queueing.blobs import BlobStore
from workers.worker.config import WorkerConfig
from workers.worker.engine import Engine
from workers.worker.runner import WorkerProcess


def build_engine(config: WorkerConfig, redis: Redis) -> Engine:
    blobs = BlobStore(redis, config.policy.prefix, config.queue_name)
    if config.stt is not None:
        from workers.stt.service import SttEngine

        return SttEngine(config.stt, blobs)
    if config.mt is not None:
        from workers.mt.service import MtEngine

        return MtEngine(config.mt)
    if config.lipsync is not None:
        from workers.lipsync.service import LipsyncEngine

        return LipsyncEngine(config.lipsync, blobs, config.policy.result_ttl_s)
    if config.xtts is not None:
        from workers.xtts.backend import XttsBackend
        from workers.xtts.service import XttsEngine

        return XttsEngine(config.xtts, XttsBackend(config.xtts), blobs, config.policy.result_ttl_s)
    assert config.tts is not None
    from workers.tts.factory import make_backend
    from workers.tts.service import TtsEngine

    return TtsEngine(config.tts, make_backend(config.tts), blobs, config.policy.result_ttl_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.worker", description=__doc__)
    parser.add_argument("--service", help="stt, tts, mt, lipsync or xtts (default: $SERVICE)")
    args = parser.parse_args(argv)
    try:
        config = WorkerConfig.from_settings(Settings(load_settings()), args.service)
        redis = Redis.from_url(config.policy.redis_url)
        engine = build_engine(config, redis)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(f"worker-{config.service}", config.identity.log_level, config.identity.pod_name,
                  config.identity.node_name)
    disable_created_metrics()
    return asyncio.run(WorkerProcess(config, engine, redis).run())


if __name__ == "__main__":
    sys.exit(main())
