"""python -m workers.gateway: validate the configuration, then serve the API with uvicorn."""

from __future__ import annotations

import signal
import sys

import uvicorn
from prometheus_client import disable_created_metrics

from workers.core.env import ConfigError, Settings, load_settings
from workers.core.jsonlog import setup_logging
from workers.gateway.app import create_app
from workers.gateway.config import GatewayConfig


def main() -> int:
    try:
        config = GatewayConfig.from_settings(Settings(load_settings()))
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging("gateway", config.identity.log_level, config.identity.pod_name, config.identity.node_name)
    disable_created_metrics()
    app = create_app(config)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal against the handler that was
    # installed before it started. A no-op handler there makes a clean shutdown exit 0, which is what
    # the kubelet counts as a normal stop.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
