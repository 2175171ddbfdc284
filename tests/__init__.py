"""filterd test suite."""
