"""Load proof: Locust users and shapes, scenario files with expectations, the checker and its report.

scripts/in-venv python -m loadtests.run --scenario surge        # see docs/loadtests.md
scripts/in-venv locust -f loadtests/locustfile.py              # interactive, web UI on 127.0.0.1
"""
