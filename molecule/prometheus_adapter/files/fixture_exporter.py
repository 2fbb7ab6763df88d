"""Serve one fixed queue-depth series for a while: test data for the molecule verify, not a real queue.

Usage: fixture_exporter.py PORT SECONDS QUEUE DEPTH
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, seconds, queue, depth = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
BODY = (
    "# HELP redis_queue_depth Fixture served by the molecule verify (not a real queue).\n"
    "# TYPE redis_queue_depth gauge\n"
    f'redis_queue_depth{{queue_name="{queue}",queue_type="waiting"}} {depth}\n'
).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Timer(seconds, server.shutdown).start()
server.serve_forever()
