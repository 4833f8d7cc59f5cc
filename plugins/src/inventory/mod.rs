//! Asset inventory sections: OS, hardware, listening ports, accounts, services.
