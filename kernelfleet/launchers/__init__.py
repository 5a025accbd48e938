"""Code that runs on kernel hosts (standard library only); shipped there by the gateway."""
