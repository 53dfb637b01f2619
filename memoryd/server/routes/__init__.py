"""REST routes: thin adapters from HTTP to the shared handlers."""
