"""Fault tests: real filterd, registry, sink and SMSC processes killed and restarted."""
