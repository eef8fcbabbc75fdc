"""Provider-neutral core: imports no provider and no contrib module."""
