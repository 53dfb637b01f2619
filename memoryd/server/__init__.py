"""The aiohttp application: REST routes, /ws, health and metrics, fan-out, shutdown."""
