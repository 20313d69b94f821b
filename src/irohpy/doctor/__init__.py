"""``irohpy doctor``: diagnose connectivity as iroh-doctor does (report, accept/connect, plot)."""
