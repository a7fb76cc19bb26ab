"""The live failover demo: `bash .ci/demo`, or `python -m hbd.demo` as root.

lab.py       network namespaces, a bridge, cables that can be cut; cleanup
cluster.py   the two nodes' /etc/ha.d, private buses, hbd processes, logs
probe.py     the service each node runs and the client that probes the VIP
view.py      permanent lines and the live status view (ANSI, or plain lines)
scenario.py  the steps and their checks
run.py       options, signals, and the guarantee that everything is cleaned up
"""
