"""Real data sets fetched from Debian packages at run time (never committed): see docs/environment.md."""
