//! Checks: external plugins (Nagios and JSON-lines conventions) and built-in probes.
