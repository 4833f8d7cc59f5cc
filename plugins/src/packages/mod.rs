//! Installed packages: the dpkg status file and the rpm database (sqlite and Berkeley DB).
