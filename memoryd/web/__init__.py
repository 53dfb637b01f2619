"""The browser client's static files (static/): the chat app and memoryd-client.js."""
