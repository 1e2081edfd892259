"""Operations around the backups: offsite copies, alerts and their sinks, preflight and restore checks."""
