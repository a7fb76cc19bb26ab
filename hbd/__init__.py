"""hbd: Linux-HA Heartbeat failover service as a systemd-native daemon."""
__version__ = "0.1.0"
