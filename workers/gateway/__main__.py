"""python -m workers.gateway: validate the configuration, then serve the API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

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
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
