"""The node agent: runs on every host, talks to Docker, the disk and NVML.

Nothing in this package may import Django or a project model, or open a database
connection: the agent runs on hosts without the control plane's settings and reports
over the web API with its own node token.
"""
