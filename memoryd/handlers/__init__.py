"""Domain logic shared by the socket and the REST API.

A handler takes the `Services` it needs, the authenticated `Caller` and a typed request,
and returns a typed result. Handlers contain no SQL and know nothing of HTTP or sockets.
"""
