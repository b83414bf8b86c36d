"""OSC adapter onto the M2UGen job server: `/m2u/*` over UDP (see bridge_osc/README.md)."""
