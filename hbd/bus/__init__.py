"""hbd on the system bus (org.linuxha.hbd1) and the client hbctl uses.

service.py   BusService: connection, name, reconnection (what the daemon starts)
objects.py   the Manager and the per-node / per-group objects
members.py   typed D-Bus declarations over dbus-next's decorators
errors.py    hbd errors -> D-Bus error names (the only mapping)
caller.py    who is calling (sender captured before dispatch)
polkit.py    CheckAuthorization for the caller
connection.py  the MessageBus subclass (quiet error replies)
names.py     bus name, paths, interfaces, polkit action
client.py    synchronous client for hbctl and scripts
"""
