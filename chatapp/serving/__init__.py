"""The OpenAI API both ways: `chatapp serve` puts a backend behind it (server.py),
and EndpointBackend talks to any server that speaks it (endpoint.py)."""
