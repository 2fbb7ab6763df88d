"""The local target's pod runner: one real host process per Running pod that kwok only pretends to run.

kwok marks pods Running on simulated GPU nodes, but nothing runs in them. The pod runner watches those
pods and starts each one's first container command as a host process (from the repository, in the
harness virtualenv), stops it with SIGTERM when the pod goes away, and restarts it when it exits while
the pod still runs. So when the HPA changes a Deployment's replicas, the number of real queue consumers
changes with it. Entry point: ``python -m workers.pod_runner``.
"""
