"""pytest fixtures that give tests real parts (namespaces, buses, ttys, systemd).

Each fixture module under tests/infra/ registers its fixtures here so that
tests/conftest.py needs a single plugin line.
"""
